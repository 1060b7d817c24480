#pragma once
// Directories the host keeps its own files in (state tables, bills, leases)
// must be its alone.  Whoever can write to one, or to a directory above it,
// can swap a file there for a symbolic link to a system file, which the
// host, often root, would then write, or for a table of their own, which it
// would map and trust.  /dev/shm, the default's home, is writable by every
// local user, so /dev/shm/serpens may well have been made by one of them.
//
// The rule, as OpenSSH's StrictModes: every directory from / down to the
// host's is owned by root or by the host's user.  One above it that others
// may write to must also be sticky (as /tmp and /dev/shm are), where only an
// entry's owner may rename or remove it.  The host's directory itself no
// other user may write to.  A symbolic link on the way counts when root or
// the host's user owns it, and what it points to is held to the same rule.

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace serpens {

// Root or the host's own user: the owners whose files and directories the
// host may trust (the plugin loader holds plugins to the same), and the
// users serpensctl trusts to serve a control socket.
bool owned_by_host_user(uid_t uid);

// "owned by uid N, neither root nor this host's uid M": the words every
// refusal of a file or directory for its owner uses.
std::string foreign_owner_text(uid_t uid);

// A mode's permission bits as chmod takes them ("755").
std::string mode_text(mode_t mode);

// Why `dir` may not hold the host's files, or "" when it may.  `dir` must
// exist; a relative path is taken from the working directory.
std::string private_directory_problem(const std::filesystem::path &dir);

// Why `dir` may not hold a file of the host's that no other user may move
// or replace (a socket, a log), or "" when it may: the rule above, with
// `dir` itself held to it as a directory on the way, so /tmp will do.
std::string directory_way_problem(const std::filesystem::path &dir);

// Creates `dir` and the directories it lacks (mode 0750 less the umask), then
// checks it as above.  Throws Error naming `what` (the setting it comes
// from, such as "[host] state_dir"), the directory at fault and the fix.
void make_private_directory(const std::filesystem::path &dir, const std::string &what);

// Makes sure `file`, which the host will open by name to write (a log, a
// stats file), goes where the host's user means it to: its directory and
// those above it pass the rule above as the way to a directory of the
// host's (so /tmp will do; missing ones are made, mode 0750), and `file`,
// unless missing (then it is made here, mode 0640 less the umask), is
// owned by root or the host's user, itself and not where a link leads.
// Others can then neither plant a link there to a file of the system's nor
// swap the file later.  Throws Error naming `what` (such as
// "[host] log_file") and the file.
void check_output_file(const std::filesystem::path &file, const std::string &what);

// Why the host may not trust `file` as input that decides who it trusts or
// who it is (a CA, a certificate, a private key), or "" when it may: its
// directory passes the rule above as the way to it, and it is a regular
// file (or a link root or the host's user made to one, checked the same)
// that root or the host's user owns and no one else may write to.  A
// `secret` (a private key) no one else may read either, as OpenSSH holds
// its keys: another local user who can read it can be this host.
std::string trusted_file_problem(const std::filesystem::path &file, bool secret);

// Why others could change the configs the host reads from `dir` (host.toml's
// directory; with `read_whole`, a directory all of whose files it reads, as
// chains_dir), or "" when they cannot.  Every local user may write to none
// of the directories `dir` resolves through unless it is sticky, and to a
// `read_whole` directory not at all, where adding a file is enough.  (The
// files themselves: serpens_read_config_file refuses one others may write.)
// Owners are not held to root or the host's user here, unlike the host's
// own directories: an operator's configs must work under sudo.
std::string config_directory_problem(const std::filesystem::path &dir, bool read_whole);

} // namespace serpens
