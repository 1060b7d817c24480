#include "models.h"

namespace serpens::bench {

const char *model_name(Model m) noexcept
{
    switch (m) {
    case Model::fork_batch:
        return "fork per batch";
    case Model::kthread_create:
        return "kThread create";
    case Model::kthread_pool:
        return "kThread pool";
    case Model::uthread_pool:
        return "uThread pool";
    case Model::function_call:
        return "function call";
    }
    return "?";
}

Launcher::Launcher(Model m, const Options &opts) : _model(m), _affinity(opts.worker_cpus)
{
    if (m == Model::kthread_pool) {
        _kpool = std::make_unique<KThreadPool>(1, _affinity);
    } else if (m == Model::uthread_pool) {
        _upool = std::make_unique<UThreadPool>(1, 256 * 1024);
    }
}

void Launcher::run(const Job &job)
{
    switch (_model) {
    case Model::fork_batch:
        run_in_child(job);
        break;
    case Model::kthread_create:
        run_in_new_thread(job, _affinity);
        break;
    case Model::kthread_pool:
        _kpool->run(job);
        break;
    case Model::uthread_pool:
        _upool->run(job);
        break;
    case Model::function_call:
        job.fn(job.arg, 0);
        break;
    }
}

} // namespace serpens::bench
