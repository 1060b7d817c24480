// serpens-bench's default paths (paths.h): the build tree's or the installed.

#include "paths.h"

#include "config/install_dirs.h"

#include <filesystem>
#include <system_error>

#if !defined(SERPENS_BENCH_BUILD_EXE) || !defined(SERPENS_BENCH_BUILD_PLUGIN_DIR) ||                                   \
    !defined(SERPENS_BENCH_BUILD_PLOT_SCRIPT) || !defined(SERPENS_BENCH_BUILD_HOST) ||                                 \
    !defined(SERPENS_BENCH_BUILD_PKTGEN)
#error "SERPENS_BENCH_BUILD_*: the build tree's serpens-bench, plugins, plot.py and tools, set by meson"
#endif

namespace serpens::bench {
namespace {

namespace fs = std::filesystem;

// The installed copy is another file than the one meson linked in the build
// tree; a copy anywhere else is taken for an installed one too.
bool runs_from_build_tree()
{
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) {
        return false;
    }
    return fs::equivalent(self, SERPENS_BENCH_BUILD_EXE, ec) && !ec;
}

DefaultPaths make_default_paths()
{
    if (runs_from_build_tree()) {
        return {SERPENS_BENCH_BUILD_PLUGIN_DIR, SERPENS_BENCH_BUILD_PLOT_SCRIPT, SERPENS_BENCH_BUILD_HOST,
                SERPENS_BENCH_BUILD_PKTGEN};
    }
    const fs::path bin = install_dirs::bin;
    return {install_dirs::plugins, (fs::path(install_dirs::data) / "bench" / "plot.py").string(),
            (bin / "serpens-host").string(), (bin / "serpens-pktgen").string()};
}

} // namespace

const DefaultPaths &default_paths()
{
    static const DefaultPaths paths = make_default_paths();
    return paths;
}

} // namespace serpens::bench
