#pragma once
// The five execution models of paper Table II / Fig. 13 behind one call:
// a Launcher runs a Job (workers.h) under the model it was made for.

#include "bench.h"
#include "workers.h"

#include <sched.h>

#include <memory>

namespace serpens::bench {

enum class Model { fork_batch, kthread_create, kthread_pool, uthread_pool, function_call };
inline constexpr Model all_models[] = {Model::fork_batch, Model::kthread_create, Model::kthread_pool,
                                       Model::uthread_pool, Model::function_call};
const char *model_name(Model m) noexcept;

class Launcher {
public:
    // Worker indexes passed to jobs are < workers() (instances per index).
    Launcher(Model m, const Options &opts);
    void run(const Job &job);
    static constexpr unsigned workers() { return 1; }

private:
    Model _model;
    cpu_set_t _affinity;
    std::unique_ptr<KThreadPool> _kpool;
    std::unique_ptr<UThreadPool> _upool;
};

} // namespace serpens::bench
