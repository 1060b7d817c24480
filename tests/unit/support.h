#pragma once
// Helpers shared by the unit tests: scratch directories and test plugins.

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#ifndef SERPENS_TEST_PLUGIN_DIR
#error "SERPENS_TEST_PLUGIN_DIR must point at the built test plugins"
#endif

namespace serpens::test {

// A fresh directory removed when the test ends.
class ScratchDir {
public:
    ScratchDir()
    {
        std::string pattern = (std::filesystem::temp_directory_path() / "serpens-test-XXXXXX").string();
        char *made = mkdtemp(pattern.data());
        if (made == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        _path = made;
    }
    ~ScratchDir()
    {
        std::error_code ec;
        std::filesystem::remove_all(_path, ec);
    }
    const std::filesystem::path &path() const noexcept { return _path; }
    std::string operator/(const std::string &name) const { return (_path / name).string(); }

    std::string write(const std::string &name, const std::string &text) const
    {
        std::string file = *this / name;
        std::ofstream(file, std::ios::binary) << text;
        return file;
    }

private:
    std::filesystem::path _path;
};

inline std::string built_plugin(const std::string &name)
{
    return std::string(SERPENS_TEST_PLUGIN_DIR) + "/serpens_nf_" + name + ".so";
}

// Copies a built test plugin into `dir` with the given mode; returns its path.
inline std::string install_plugin(const ScratchDir &dir, const std::string &name,
                                  std::filesystem::perms mode = std::filesystem::perms(0755))
{
    std::string target = dir / ("serpens_nf_" + name + ".so");
    std::filesystem::copy_file(built_plugin(name), target, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(target, mode);
    return target;
}

} // namespace serpens::test
