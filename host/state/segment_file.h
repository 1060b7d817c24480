#pragma once
// The file side of a shared-memory segment, the same for every kind of state
// file (tables, a chain's flow table): a segment that cannot be used is moved
// aside, never wiped, and a new one is built under a temporary name with its
// memory reserved before it is renamed into place.

#include <cstdint>
#include <filesystem>
#include <string>

namespace serpens::state {

std::string errno_text(int e);

// Moves `file` to "<file>.bad-<UTC time>" and returns that name; "" when the
// rename failed (errno says why).
std::string move_aside(const std::filesystem::path &file);

// Creates `tmp` read-write with an exclusive flock, `size` bytes long (made
// a whole number of pages on hugetlbfs, where `size` is updated), every byte
// of it reserved now: on a full tmpfs a sparse file takes SIGBUS at its first
// write to a new page, in the data path.  Returns the descriptor; -1 with
// `err` ("<tmp>: what failed: why", `reserving` saying for what the memory
// was, with what to do) and `tmp` removed.
int create_reserved(const std::string &tmp, uint64_t &size, const std::string &reserving, std::string &err);

// Readies a writable mapping of a segment for the data path, at start (cold
// path): a big one asks for huge pages (4 KiB pages make it TLB-bound), and
// every page is faulted in now, since tmpfs zeroes a reserved page only at
// its first touch and a flow's first packet would wait for that (nat's new
// flows ran at 20k/s while their tables' pages were first written).
void ready_for_data_path(void *map, std::size_t size) noexcept;

} // namespace serpens::state
