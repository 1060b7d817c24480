#pragma once
// Where serpens-bench finds what it runs unless a flag says otherwise: the
// NF plugins (--plugins), plot.py (--plot-script), serpens-host (--host) and
// serpens-pktgen (--pktgen).

#include <string>

namespace serpens::bench {

struct DefaultPaths {
    std::string plugin_dir;
    std::string plot_script;
    std::string host_exe;
    std::string pktgen_exe;
};

// The build tree's files when this process runs the executable meson built
// there, else where `meson install` put them (config/install_dirs.h).
// Decided once, on the first call; thread-safe.
const DefaultPaths &default_paths();

} // namespace serpens::bench
