#pragma once
// The rows of an X-macro results table (parse_results.def,
// vxlan_results.def) as one constexpr array, looked up by the result enum:
// each .cpp expands its .def once into ResultRow initializers.
//
// Thread-safe: constant data only.

#include <cstddef>

namespace serpens::net::detail {

template<class Class>
struct ResultRow {
    const char *name;        // the enum symbol ("bad_ipv4_length")
    const char *description; // one line for humans
    Class cls;
};

// The row of result `r`, or `fallback` when `r` is past the table's end.
template<class Class, std::size_t N, class Result>
constexpr const ResultRow<Class> &result_row(const ResultRow<Class> (&rows)[N], Result r,
                                             const ResultRow<Class> &fallback) noexcept
{
    const auto i = static_cast<std::size_t>(r);
    return i < N ? rows[i] : fallback;
}

} // namespace serpens::net::detail
