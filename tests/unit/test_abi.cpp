// nf.h compiles as C++20 (this file) and its layout is what ABI 1.0 promises.

#include <serpens/nf.h>

#include <doctest/doctest.h>

#include <cstddef>
#include <type_traits>

static_assert(std::is_standard_layout_v<serpens_nf_descriptor>);
static_assert(std::is_trivially_copyable_v<serpens_pkt>);
static_assert(offsetof(serpens_nf_descriptor, abi_major) == 0, "version first, so any loader can read it");
static_assert(offsetof(serpens_nf_descriptor, struct_size) == 4);
static_assert(offsetof(serpens_host_api, struct_size) == 0);

TEST_CASE("labels and ports leave room for chains and branches")
{
    CHECK(SERPENS_LABEL_OUT == 0);
    CHECK(SERPENS_MAX_CHAIN_NFS < SERPENS_LABEL_DROP);
    CHECK(SERPENS_MAX_PORTS < SERPENS_PORT_DROP);
}
