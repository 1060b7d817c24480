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

} // namespace serpens::state
