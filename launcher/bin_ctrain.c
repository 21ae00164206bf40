/* The `ctrain` executable. */
#include "launcher/launcher.h"

int main(int argc, char **argv) {
    return ct_cli_main(argc, argv);
}
