#include "ddim.h"

#include <cmath>

#include "errors.h"

namespace rd {

std::vector<int64_t> DdimSchedule::timesteps(int64_t k) const {
  const int64_t n = num_train_timesteps;
  if (k <= 0 || k > n) fail(RD_ERR_INVALID_ARGUMENT, "number of denoising steps must be in 1.." + std::to_string(n));
  std::vector<int64_t> ts;
  if (timestep_spacing == "linspace") {  // numpy linspace(0, n - 1, k), rounded half to even, high to low
    const double step = k > 1 ? static_cast<double>(n - 1) / static_cast<double>(k - 1) : 0.0;
    for (int64_t i = k - 1; i >= 0; --i) {
      const double v = (i == k - 1 && k > 1) ? static_cast<double>(n - 1) : static_cast<double>(i) * step;
      ts.push_back(static_cast<int64_t>(std::nearbyint(v)));
    }
  } else if (timestep_spacing == "leading") {
    for (int64_t i = k - 1; i >= 0; --i) ts.push_back(i * (n / k) + steps_offset);
  } else if (timestep_spacing == "trailing") {  // numpy arange(n, 0, -n / k), rounded, minus 1
    const double step = -static_cast<double>(n) / static_cast<double>(k);
    const int64_t count = static_cast<int64_t>(std::ceil((0.0 - static_cast<double>(n)) / step));
    for (int64_t i = 0; i < count; ++i) ts.push_back(static_cast<int64_t>(std::nearbyint(n + i * step)) - 1);
  } else {
    fail(RD_ERR_ENGINE, "scheduler config: unknown timestep_spacing '" + timestep_spacing + "'");
  }
  return ts;
}

std::vector<DdimStep> DdimSchedule::schedule(int64_t k) const {
  std::vector<DdimStep> out;
  for (int64_t t : timesteps(k)) {
    const int64_t t_prev = t - num_train_timesteps / k;
    if (t < 0 || t >= static_cast<int64_t>(alphas_cumprod.size()))
      fail(RD_ERR_ENGINE, "scheduler config: timestep " + std::to_string(t) + " outside the stored alpha table");
    const float final_alpha = set_alpha_to_one ? 1.0f : alphas_cumprod.at(0);
    out.push_back({t, t_prev, alphas_cumprod[t], t_prev >= 0 ? alphas_cumprod[t_prev] : final_alpha});
  }
  return out;
}

}  // namespace rd
