/*
 * The ABI's layout, pinned at build time and compiled as C (what plugins are):
 * moving, resizing or inserting a field fails the build here.  Offsets and
 * sizes are LP64 literals, never expressions of the header under test.  A new
 * field appended in a later minor adds its own lines; none of these change.
 */
#include <serpens/nf.h>

#include <stddef.h>

#define AT(type, field, off)                                                                                           \
    _Static_assert(offsetof(struct type, field) == (off), #type "." #field " moved: the ABI is append-only")
#define SIZE(type, n) _Static_assert(sizeof(struct type) == (n), #type ": size changed")

_Static_assert(SERPENS_ABI_MAJOR == 1, "a major bump breaks every plugin");
_Static_assert(SERPENS_ABI_MINOR == 9, "a new minor appends fields: pin them here");

/* The frozen v1.0 sizes are where each struct's 1.0 fields end. */
_Static_assert(SERPENS_NF_DESCRIPTOR_V1_SIZE == 120, "frozen");
_Static_assert(SERPENS_HOST_API_V1_0_SIZE == 200, "frozen");
_Static_assert(SERPENS_NF_CTX_V1_0_SIZE == 48, "frozen");
_Static_assert(SERPENS_BATCH_V1_0_SIZE == 48, "frozen");
_Static_assert(SERPENS_PKT_V1_0_SIZE == 48, "frozen");

AT(serpens_pkt, data, 0);
AT(serpens_pkt, len, 8);
AT(serpens_pkt, l3_offset, 12);
AT(serpens_pkt, l4_offset, 14);
AT(serpens_pkt, payload_offset, 16);
AT(serpens_pkt, l3_type, 18);
AT(serpens_pkt, l4_proto, 19);
AT(serpens_pkt, flow_hash, 20);
AT(serpens_pkt, flags, 24);
AT(serpens_pkt, vlan_id, 28);
AT(serpens_pkt, reserved0, 30);
AT(serpens_pkt, reserved1, 32);
AT(serpens_pkt, handle, 40);
SIZE(serpens_pkt, SERPENS_PKT_V1_0_SIZE);

AT(serpens_batch, struct_size, 0);
AT(serpens_batch, count, 4);
AT(serpens_batch, self, 8);
AT(serpens_batch, reserved0, 10);
AT(serpens_batch, reserved1, 12);
AT(serpens_batch, pkts, 16);
AT(serpens_batch, labels, 24);
AT(serpens_batch, ports, 32);
AT(serpens_batch, now_ns, 40);
AT(serpens_batch, pkt_stride, SERPENS_BATCH_V1_0_SIZE); /* 1.4 */
AT(serpens_batch, reserved2, 52);
AT(serpens_batch, flows, 56); /* 1.5 */
AT(serpens_batch, flow_flags, 64);
AT(serpens_batch, flow_offset, 72);
AT(serpens_batch, reserved3, 76);
SIZE(serpens_batch, 80);

AT(serpens_state_hook_args, struct_size, 0);
AT(serpens_state_hook_args, n, 4);
AT(serpens_state_hook_args, table, 8);
AT(serpens_state_hook_args, key, 16);
AT(serpens_state_hook_args, key_size, 24);
AT(serpens_state_hook_args, value_size, 28);
AT(serpens_state_hook_args, whole, 32);
AT(serpens_state_hook_args, parts, 40);
AT(serpens_state_hook_args, out, 48);
SIZE(serpens_state_hook_args, 56);

AT(serpens_host_api, struct_size, 0);
AT(serpens_host_api, abi_major, 4);
AT(serpens_host_api, abi_minor, 6);
AT(serpens_host_api, log, 8);
AT(serpens_host_api, now_ns, 16);
AT(serpens_host_api, config_string, 24);
AT(serpens_host_api, config_int, 32);
AT(serpens_host_api, config_double, 40);
AT(serpens_host_api, config_bool, 48);
AT(serpens_host_api, config_array_size, 56);
AT(serpens_host_api, config_path, 64);
AT(serpens_host_api, config_where, 72);
AT(serpens_host_api, create_table, 80);
AT(serpens_host_api, get_state, 88);
AT(serpens_host_api, put_state, 96);
AT(serpens_host_api, delete_state, 104);
AT(serpens_host_api, get_state_bulk, 112);
AT(serpens_host_api, split, 120);
AT(serpens_host_api, merge, 128);
AT(serpens_host_api, update, 136);
AT(serpens_host_api, timer, 144);
AT(serpens_host_api, trigger, 152);
AT(serpens_host_api, pkt_prepend, 160);
AT(serpens_host_api, pkt_append, 168);
AT(serpens_host_api, pkt_trim, 176);
AT(serpens_host_api, pkt_adj, 184);
AT(serpens_host_api, counter, 192);
AT(serpens_host_api, add_state_bulk, SERPENS_HOST_API_V1_0_SIZE); /* 1.1 */
AT(serpens_host_api, scan_state, 208);                            /* 1.2 */
AT(serpens_host_api, table_slots, 216);
AT(serpens_host_api, update_state_bulk, 224);    /* 1.3 */
AT(serpens_host_api, update_state_bulk_v2, 232); /* 1.4 */
AT(serpens_host_api, add_state_bulk_v2, 240);
AT(serpens_host_api, flow_state, 248);       /* 1.5 */
AT(serpens_host_api, flow_visit_every, 256); /* 1.6 */
AT(serpens_host_api, config_file, 264);      /* 1.9 */
SIZE(serpens_host_api, 272);

AT(serpens_nf_ctx, struct_size, 0);
AT(serpens_nf_ctx, instance_id, 4);
AT(serpens_nf_ctx, host, 8);
AT(serpens_nf_ctx, chain_name, 16);
AT(serpens_nf_ctx, nf_name, 24);
AT(serpens_nf_ctx, priv, 32);
AT(serpens_nf_ctx, host_private, 40);
SIZE(serpens_nf_ctx, SERPENS_NF_CTX_V1_0_SIZE);

AT(serpens_nf_descriptor, abi_major, 0);
AT(serpens_nf_descriptor, abi_minor, 2);
AT(serpens_nf_descriptor, struct_size, 4);
AT(serpens_nf_descriptor, name, 8);
AT(serpens_nf_descriptor, version, 16);
AT(serpens_nf_descriptor, summary, 24);
AT(serpens_nf_descriptor, flags, 32);
AT(serpens_nf_descriptor, n_ports, 36);
AT(serpens_nf_descriptor, reserved0, 38);
AT(serpens_nf_descriptor, init, 40);
AT(serpens_nf_descriptor, process, 48);
AT(serpens_nf_descriptor, fini, 56);
AT(serpens_nf_descriptor, split, 64);
AT(serpens_nf_descriptor, merge, 72);
AT(serpens_nf_descriptor, update, 80);
AT(serpens_nf_descriptor, reserved, 88);
AT(serpens_nf_descriptor, min_host_minor, SERPENS_NF_DESCRIPTOR_V1_SIZE); /* 1.4 */
AT(serpens_nf_descriptor, reserved1, 122);
AT(serpens_nf_descriptor, reserved2, 124);
AT(serpens_nf_descriptor, flow_state_size, 128); /* 1.5 */
AT(serpens_nf_descriptor, reserved3, 132);
AT(serpens_nf_descriptor, flow_expired, 136);
AT(serpens_nf_descriptor, flow_visit, 144); /* 1.6 */
AT(serpens_nf_descriptor, flow_visit_ms, 152);
AT(serpens_nf_descriptor, reserved4, 156);
AT(serpens_nf_descriptor, table_layouts, 160); /* 1.7 */
AT(serpens_nf_descriptor, n_table_layouts, 168);
AT(serpens_nf_descriptor, reserved5, 172);
SIZE(serpens_nf_descriptor, 176);

AT(serpens_field, name, 0);
AT(serpens_field, offset, 8);
AT(serpens_field, type, 12);
AT(serpens_field, size, 14);
SIZE(serpens_field, 16);

AT(serpens_table_layout, table, 0);
AT(serpens_table_layout, key, 8);
AT(serpens_table_layout, value, 16);
AT(serpens_table_layout, n_key, 24);
AT(serpens_table_layout, n_value, 26);
AT(serpens_table_layout, reserved, 28);
SIZE(serpens_table_layout, 32);

AT(serpens_flow_info, struct_size, 0);
AT(serpens_flow_info, ip_version, 4);
AT(serpens_flow_info, proto, 5);
AT(serpens_flow_info, initiator_b, 6);
AT(serpens_flow_info, expiring, 7);
AT(serpens_flow_info, addr_a, 8);
AT(serpens_flow_info, addr_b, 24);
AT(serpens_flow_info, port_a, 40);
AT(serpens_flow_info, port_b, 42);
AT(serpens_flow_info, stopping, 44);
AT(serpens_flow_info, reserved, 45);
AT(serpens_flow_info, idle_ns, 48);
AT(serpens_flow_info, now_ns, 56);
SIZE(serpens_flow_info, 64);
