#pragma once
// The host's default state-manager hooks (formats documented in executor.h).
// Same signature as the descriptor's hooks so both go through one call path.
// Buffers are value_size bytes rounded up to 8 with zero padding.

#include <serpens/nf.h>

namespace serpens::state {

// RELEASE, bitmap pool (a set bit is a free item).
int default_release_merge(serpens_nf_ctx *ctx, const serpens_state_hook_args *a);  // out = whole | parts...
int default_release_split(serpens_nf_ctx *ctx, const serpens_state_hook_args *a);  // deal equally
int default_release_update(serpens_nf_ctx *ctx, const serpens_state_hook_args *a); // merge + split in place

// EVENTUAL, uint64 counters.
int default_eventual_merge(serpens_nf_ctx *ctx, const serpens_state_hook_args *a); // out = G + sum(R_i - G)
int default_eventual_split(serpens_nf_ctx *ctx, const serpens_state_hook_args *a); // parts = copies of whole

} // namespace serpens::state
