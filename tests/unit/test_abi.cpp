// nf.h compiles as C++20 (this file); test_abi_layout.c pins its layout as C.
// Everything here is decided at compile time: a wrong constant fails the build.

#include <serpens/nf.h>

#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <type_traits>

static_assert(std::is_standard_layout_v<serpens_nf_descriptor>);
static_assert(std::is_trivially_copyable_v<serpens_pkt>);
static_assert(offsetof(serpens_nf_descriptor, abi_major) == 0, "version first, so any loader can read it");
static_assert(offsetof(serpens_nf_descriptor, struct_size) == 4);
static_assert(offsetof(serpens_host_api, struct_size) == 0);

// Labels and ports leave room for chains and branches.
static_assert(SERPENS_LABEL_OUT == 0);
static_assert(SERPENS_MAX_CHAIN_NFS < SERPENS_LABEL_DROP);
static_assert(SERPENS_MAX_PORTS < SERPENS_PORT_DROP);

// The frozen 1.0 sizes are literals: growing a struct leaves them alone.
static_assert(SERPENS_NF_DESCRIPTOR_V1_SIZE < sizeof(serpens_nf_descriptor));
static_assert(SERPENS_NF_DESCRIPTOR_V1_SIZE == offsetof(serpens_nf_descriptor, min_host_minor));
static_assert(SERPENS_BATCH_V1_0_SIZE == offsetof(serpens_batch, pkt_stride));
static_assert(SERPENS_HOST_API_V1_0_SIZE == offsetof(serpens_host_api, add_state_bulk));

TEST_CASE("serpens_batch_pkt steps by pkt_stride, not by the plugin's sizeof")
{
    // A host whose views are larger than this header's serpens_pkt (a later
    // minor appended fields): 64-byte views, each tagged by its len.
    alignas(8) unsigned char views[3 * 64] = {};
    for (uint32_t i = 0; i < 3; ++i) {
        serpens_pkt p{};
        p.len = 100 + i;
        std::memcpy(views + i * 64, &p, sizeof p);
    }
    serpens_batch batch{};
    batch.struct_size = sizeof batch;
    batch.count = 3;
    batch.pkts = reinterpret_cast<serpens_pkt *>(views);
    batch.pkt_stride = 64;
    CHECK(serpens_batch_pkt(&batch, 0)->len == 100);
    CHECK(serpens_batch_pkt(&batch, 2)->len == 102);
    CHECK(reinterpret_cast<unsigned char *>(serpens_batch_pkt(&batch, 2)) == views + 128);

    batch.pkt_stride = SERPENS_PKT_V1_0_SIZE; // what the host lays out today
    CHECK(serpens_batch_pkt(&batch, 1) == &batch.pkts[1]);
    CHECK(SERPENS_PKT_HAS(&batch, handle));
}

TEST_CASE("serpens_batch_flow_view gives each packet what serpens_batch_flow and _flow_flags give")
{
    alignas(8) unsigned char entry_a[128] = {}, entry_b[128] = {};
    void *entries[3] = {entry_a, nullptr, entry_b};
    const uint8_t flags[3] = {SERPENS_FLOW_NEW, 0, SERPENS_FLOW_REPLY};
    serpens_batch batch{};
    batch.struct_size = sizeof batch;
    batch.count = 3;
    batch.flows = entries;
    batch.flow_flags = flags;
    batch.flow_offset = 56;
    auto agree = [&] {
        const serpens_flow_view view = serpens_batch_flow_view(&batch);
        for (uint32_t i = 0; i < batch.count; ++i) {
            CAPTURE(i);
            CHECK(serpens_flow_area(&view, i) == serpens_batch_flow(&batch, i));
            CHECK(serpens_flow_flags(&view, i) == serpens_batch_flow_flags(&batch, i));
        }
    };
    agree();
    const serpens_flow_view view = serpens_batch_flow_view(&batch);
    CHECK(serpens_flow_area(&view, 2) == entry_b + 56);
    CHECK(serpens_flow_area(&view, 1) == nullptr);

    // A chain without a flow table, and a host older than 1.5 (its batch
    // ends before the flow fields, whatever lies there): no areas, no flags.
    batch.flows = nullptr;
    batch.flow_flags = nullptr;
    agree();
    batch.flows = entries;
    batch.flow_flags = flags;
    batch.struct_size = offsetof(serpens_batch, flows);
    agree();
    const serpens_flow_view old_host = serpens_batch_flow_view(&batch);
    CHECK(serpens_flow_area(&old_host, 0) == nullptr);
    CHECK(serpens_flow_flags(&old_host, 0) == 0);
}
