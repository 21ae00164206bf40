/* The `ctrain-launch` executable. */
#include "launcher/launcher.h"

int main(int argc, char **argv) {
    return ct_launch_main(argc, argv);
}
