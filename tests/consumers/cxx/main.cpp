/* SPDX-License-Identifier: MIT */
// A C++17 program that uses an installed libattn through its CMake package
// (find_package(attn CONFIG), target attn::attn). The public header is
// compiled as C++ with -Wall -Wextra -Wpedantic -Werror, so anything C-only
// in its declarations fails this build.
//
// It computes the same forward pass as the C consumer: identity
// projections, output bias (0.5, -0.25), x = [[1, 0], [0, 1]], one head of
// width 2; the larger attention weight is p = 1 / (1 + exp(-1/sqrt(2))).
#include <attn/attn.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>
#include <vector>

namespace {

struct layer_deleter {
  void operator()(attn_layer *layer) const noexcept {
    attn_layer_destroy(layer);
  }
};
using layer_ptr = std::unique_ptr<attn_layer, layer_deleter>;

int fail(const char *what, attn_status st) {
  std::fprintf(stderr, "consumer_cxx: %s: %s (%s)\n", what,
               attn_status_string(st), attn_last_error());
  return 1;
}

} // namespace

int main() {
  static_assert(ATTN_VERSION_NUMBER == 10000 * ATTN_VERSION_MAJOR +
                                           100 * ATTN_VERSION_MINOR +
                                           ATTN_VERSION_PATCH,
                "version macros agree");
  if (attn_version_number() != ATTN_VERSION_NUMBER) {
    std::fprintf(stderr, "consumer_cxx: header %s but library %s\n",
                 ATTN_VERSION_STRING, attn_version_string());
    return 1;
  }

  attn_config cfg{};
  attn_config_init(&cfg);
  cfg.embed_dim = 2;
  cfg.num_heads = 1;
  attn_layer *raw = nullptr;
  attn_status st = attn_layer_create(&cfg, &raw);
  if (st != ATTN_OK)
    return fail("attn_layer_create", st);
  layer_ptr layer(raw);

  const std::vector<float> in_proj{1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1};
  const std::vector<float> in_bias(6, 0.0f);
  const std::vector<float> out_proj{1, 0, 0, 1};
  const std::vector<float> out_bias{0.5f, -0.25f};
  const std::array<std::pair<attn_weight_id, const std::vector<float> *>, 4>
      weights{{{ATTN_W_IN_PROJ, &in_proj},
               {ATTN_B_IN_PROJ, &in_bias},
               {ATTN_W_OUT, &out_proj},
               {ATTN_B_OUT, &out_bias}}};
  for (const auto &[which, data] : weights) {
    int64_t count = 0;
    st = attn_layer_weight_count(layer.get(), which, &count);
    if (st != ATTN_OK)
      return fail("attn_layer_weight_count", st);
    if (count != static_cast<int64_t>(data->size())) {
      std::fprintf(stderr, "consumer_cxx: weight %d has %lld elements\n",
                   static_cast<int>(which), static_cast<long long>(count));
      return 1;
    }
    st = attn_layer_set_weight(layer.get(), which, data->data(), count);
    if (st != ATTN_OK)
      return fail("attn_layer_set_weight", st);
  }

  attn_mask mask;
  attn_mask_init(&mask);
  attn_options opts;
  attn_options_init(&opts);
  std::vector<float> probs(1 * 1 * 2 * 2);
  opts.attn_weights = probs.data();

  const std::array<float, 4> x{1, 0, 0, 1};
  std::array<float, 4> out{};
  st = attn_forward(layer.get(), 1, 2, 2, x.data(), x.data(), x.data(), &mask,
                    &opts, out.data());
  if (st != ATTN_OK)
    return fail("attn_forward", st);

  const double p = 1.0 / (1.0 + std::exp(-1.0 / std::sqrt(2.0)));
  const std::array<double, 4> expected{p + 0.5, (1 - p) - 0.25, (1 - p) + 0.5,
                                       p - 0.25};
  const std::array<double, 4> expected_probs{p, 1 - p, 1 - p, p};
  bool ok = true;
  for (std::size_t i = 0; i < out.size(); i++) {
    if (!(std::fabs(out[i] - expected[i]) <= 1e-5) ||
        !(std::fabs(probs[i] - expected_probs[i]) <= 1e-5)) {
      std::fprintf(stderr,
                   "consumer_cxx: out[%zu] = %.7f (expected %.7f), "
                   "weight %.7f (expected %.7f)\n",
                   i, static_cast<double>(out[i]), expected[i],
                   static_cast<double>(probs[i]), expected_probs[i]);
      ok = false;
    }
  }
  if (!ok)
    return 1;
  std::printf("consumer_cxx: libattn %s, out[0] = %.6f as expected\n",
              attn_version_string(), static_cast<double>(out[0]));
  return 0;
}
