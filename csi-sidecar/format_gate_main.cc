// stateguard-format-gate: see csi-sidecar/format_gate.h.
#include "csi-sidecar/format_gate.h"

int main(int argc, char** argv) { return stateguard::csi::formatGateMain(argc, argv); }
