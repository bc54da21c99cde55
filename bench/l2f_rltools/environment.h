// RLtools' own Learning-to-Fly environment (Crazyflie dynamics, the default L2F parameters) for the
// rltools pip package's TD3 (`rltools.TD3({"path": this folder, ...})`), used by bench/l2f.py.
#include <rl_tools/rl/environments/l2f/operations_cpu.h>

namespace rlt = rl_tools;

template <typename T, typename TI>
using ENVIRONMENT_FACTORY = rlt::rl::environments::Multirotor<rlt::rl::environments::l2f::Specification<T, TI>>;
