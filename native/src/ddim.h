// The DDIM steps of a schedule, from the scheduler config and the alpha_bar table an engine stores.
// Mirrors rd_engine.model.ddim.DDIM.timesteps / step_at (eta = 0).
#pragma once

#include <string>
#include <vector>

namespace rd {

struct DdimStep {
  int64_t t;
  int64_t t_prev;
  float alpha_t;
  float alpha_prev;
};

struct DdimSchedule {
  int64_t num_train_timesteps = 1000;
  std::string timestep_spacing = "leading";
  int64_t steps_offset = 0;
  bool set_alpha_to_one = true;
  std::vector<float> alphas_cumprod;

  std::vector<int64_t> timesteps(int64_t num_inference_steps) const;
  std::vector<DdimStep> schedule(int64_t num_inference_steps) const;
};

}  // namespace rd
