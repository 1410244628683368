#include "ddim.h"

#include <cmath>

#include "errors.h"

namespace rd {

std::vector<long> DdimSchedule::timesteps(long k) const {
  const long n = num_train_timesteps;
  if (k <= 0 || k > n) fail(RD_ERR_INVALID_ARGUMENT, "number of denoising steps must be in 1.." + std::to_string(n));
  std::vector<long> ts;
  if (timestep_spacing == "linspace") {  // numpy linspace(0, n - 1, k), rounded half to even, high to low
    const double step = k > 1 ? static_cast<double>(n - 1) / static_cast<double>(k - 1) : 0.0;
    for (long i = k - 1; i >= 0; --i) {
      const double v = (i == k - 1 && k > 1) ? static_cast<double>(n - 1) : static_cast<double>(i) * step;
      ts.push_back(static_cast<long>(std::nearbyint(v)));
    }
  } else if (timestep_spacing == "leading") {
    for (long i = k - 1; i >= 0; --i) ts.push_back(i * (n / k) + steps_offset);
  } else if (timestep_spacing == "trailing") {  // numpy arange(n, 0, -n / k), rounded, minus 1
    const double step = -static_cast<double>(n) / static_cast<double>(k);
    const long count = static_cast<long>(std::ceil((0.0 - static_cast<double>(n)) / step));
    for (long i = 0; i < count; ++i) ts.push_back(static_cast<long>(std::nearbyint(n + i * step)) - 1);
  } else {
    fail(RD_ERR_ENGINE, "scheduler config: unknown timestep_spacing '" + timestep_spacing + "'");
  }
  return ts;
}

std::vector<DdimStep> DdimSchedule::schedule(long k) const {
  std::vector<DdimStep> out;
  for (long t : timesteps(k)) {
    const long t_prev = t - num_train_timesteps / k;
    if (t < 0 || t >= static_cast<long>(alphas_cumprod.size()))
      fail(RD_ERR_ENGINE, "scheduler config: timestep " + std::to_string(t) + " outside the stored alpha table");
    const float final_alpha = set_alpha_to_one ? 1.0f : alphas_cumprod.at(0);
    out.push_back({t, t_prev, alphas_cumprod[t], t_prev >= 0 ? alphas_cumprod[t_prev] : final_alpha});
  }
  return out;
}

}  // namespace rd
