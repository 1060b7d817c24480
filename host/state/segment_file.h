#pragma once
// The file side of a shared-memory segment, the same for every kind of state
// file (tables, a chain's flow table): a segment that cannot be used is moved
// aside, never wiped, and a new one is built under a temporary name with its
// memory reserved before it is renamed into place.  Each kind brings its own
// header and the rule for whether an existing file fits; the steps are here.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace serpens::state {

std::string errno_text(int e);

// Moves `file` to "<file>.bad-<UTC time>" and returns that name; "" when the
// rename failed (errno says why).
std::string move_aside(const std::filesystem::path &file);

// Reads the header of the segment open at `fd`, the first `len` bytes, into
// `header`, and its file's size into `size`.  "" or why not: the file is
// shorter than `room` (the bytes its kind keeps for the header), or a read
// failed.
std::string read_header(int fd, void *header, std::size_t len, uint64_t room, uint64_t &size);

// Why an existing segment, whose header was read and whose file is `size`
// bytes, does not fit what the caller wants (empty: it fits).
using SegmentFit = std::function<std::vector<std::string>(uint64_t size)>;

// Opens `file`, an existing segment, read-write under an exclusive flock,
// reads its header (read_header) and asks `fits`.  Returns the descriptor
// of a segment that fits, its size in `size`.  -1 with `err` empty: there
// is none to use, because `file` is missing or did not fit and was moved
// aside (a warning names `what`, such as "flow table", why and where it
// went), so the caller creates one.  -1 with `err`: another process holds
// it, or it could be neither used nor moved aside, or it cannot be opened.
int open_existing(const std::filesystem::path &file, const std::string &what, void *header, std::size_t len,
                  uint64_t room, const SegmentFit &fits, uint64_t &size, std::string &err);

// The temporary name a new segment for `file` is built under (this
// process's own), until publish() renames it into place.
std::string creation_name(const std::filesystem::path &file);

// Renames the new segment `tmp`, its header written, to `file`: a crash
// during creation never leaves a half-written header under the real name.
// false with `err` (and `tmp` removed) when the rename failed.
bool publish(const std::string &tmp, const std::filesystem::path &file, std::string &err);

// Nanoseconds since the Unix epoch: when a segment's header says it was made.
uint64_t unix_now_ns();

// Creates `tmp` read-write with an exclusive flock, `size` bytes long (made
// a whole number of pages on hugetlbfs, where `size` is updated), every byte
// of it reserved now: on a full tmpfs a sparse file takes SIGBUS at its first
// write to a new page, in the data path.  A big one is reserved in huge
// pages where the mount gives them (huge=advise, huge=within_size,
// huge=always).  Returns the descriptor; -1 with `err` ("<tmp>: what
// failed: why", `reserving` saying for what the memory was, with what to
// do) and `tmp` removed.
int create_reserved(const std::string &tmp, uint64_t &size, const std::string &reserving, std::string &err);

// What the operator should know about the pages the big tables in `dir` (an
// existing directory) will get: a sentence when they are 4 KiB pages of a
// tmpfs the host cannot ask for huge ones on (mounted without huge=, as
// /dev/shm is), with the remount that fixes it; "" otherwise.  At a million
// flows 4 KiB pages slow the chain's new flows with TLB misses (README, "A
// million flows").
std::string small_pages_note(const std::filesystem::path &dir);

// Readies a writable mapping of a segment for the data path, at start (cold
// path): a big one asks for huge pages (4 KiB ones cost it TLB misses), and
// every page is faulted in and read once now, since tmpfs zeroes a reserved
// page only at its first touch and a virtual machine's hypervisor may map it
// only at its first user access: a flow's first packet would wait for both
// (nat's new flows ran at 20k/s while their tables' pages were first
// written).
void ready_for_data_path(void *map, std::size_t size) noexcept;

} // namespace serpens::state
