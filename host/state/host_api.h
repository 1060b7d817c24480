#pragma once
// Fills the state slots of struct serpens_host_api (create_table, get_state,
// put_state, delete_state, get_state_bulk, split, merge, update, timer,
// trigger) with C-callable shims over serpens::state.
//
// create_table finds its executor through NfContext::of(ctx)->executor, so
// the host must set NfContext::executor (StateStore::executor(chain, nf))
// before calling the NF's init.  The returned serpens_table * is a
// TableHandle for (table, ctx->instance_id).
//
// Thread safety of the shims: get/put/delete/bulk are lock-free and may be
// called from the instance's worker; a handle belongs to one instance, i.e.
// one thread.  split/merge/update/timer take the executor's lock (init or
// rare control events); trigger only records a request (lock- and
// allocation-free) that the state manager's tick carries out.

#include <serpens/nf.h>

namespace serpens::state {

void install_host_api(serpens_host_api &api);

} // namespace serpens::state
