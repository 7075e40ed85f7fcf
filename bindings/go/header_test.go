// SPDX-License-Identifier: MIT

package attn

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goConstants is what this package exposes for each integer constant of
// attn.h; the ones not exposed as Go constants are used through cgo only.
var goConstants = map[string]int64{
	"ATTN_VERSION_NUMBER": HeaderVersionNumber,
	"ATTN_OK":             int64(StatusOK), "ATTN_ERR_NULL_POINTER": int64(StatusNullPointer),
	"ATTN_ERR_STRUCT_SIZE": int64(StatusStructSize), "ATTN_ERR_BAD_SIZE": int64(StatusBadSize),
	"ATTN_ERR_OVERFLOW": int64(StatusOverflow), "ATTN_ERR_WEIGHT_SIZE": int64(StatusWeightSize),
	"ATTN_ERR_WEIGHT_LAYOUT": int64(StatusWeightLayout), "ATTN_ERR_WEIGHTS_NOT_SET": int64(StatusWeightsNotSet),
	"ATTN_ERR_BAD_MASK": int64(StatusBadMask), "ATTN_ERR_BAD_OPTION": int64(StatusBadOption),
	"ATTN_ERR_NOT_FINITE": int64(StatusNotFinite), "ATTN_ERR_NO_MEMORY": int64(StatusNoMemory),
	"ATTN_ERR_SCRATCH_TOO_SMALL": int64(StatusScratchTooSmall), "ATTN_ERR_IO": int64(StatusIO),
	"ATTN_ERR_FILE_FORMAT": int64(StatusFileFormat), "ATTN_ERR_TENSOR_MISSING": int64(StatusTensorMissing),
	"ATTN_ERR_TENSOR_DTYPE": int64(StatusTensorDtype), "ATTN_ERR_TENSOR_SHAPE": int64(StatusTensorShape),
	"ATTN_ERR_CAPACITY": int64(StatusCapacity), "ATTN_ERR_MISMATCH": int64(StatusMismatch),
	"ATTN_ERR_UNSUPPORTED": int64(StatusUnsupported),
	"ATTN_CORE_AUTO":       int64(CoreAuto), "ATTN_CORE_BLAS": int64(CoreBlas),
	"ATTN_CORE_PACKED": int64(CorePacked),
	"ATTN_BLAS_HOLD":   int64(BlasHold), "ATTN_BLAS_LEAVE": int64(BlasLeave),
	"ATTN_W_IN_PROJ": int64(WeightInProj), "ATTN_B_IN_PROJ": int64(WeightInProjBias),
	"ATTN_W_Q": int64(WeightQ), "ATTN_W_K": int64(WeightK), "ATTN_W_V": int64(WeightV),
	"ATTN_W_OUT": int64(WeightOut), "ATTN_B_OUT": int64(WeightOutBias), "ATTN_B_Q": int64(WeightQBias),
	"ATTN_B_K": int64(WeightKBias), "ATTN_B_V": int64(WeightVBias),
	"ATTN_CAUSAL_NONE": int64(CausalNone), "ATTN_CAUSAL_TOP_LEFT": int64(CausalTopLeft),
	"ATTN_CAUSAL_BOTTOM_RIGHT": int64(CausalBottomRight),
	"ATTN_EMPTY_ROW_ZERO":      int64(EmptyRowsZero), "ATTN_EMPTY_ROW_NAN": int64(EmptyRowsNaN),
	"ATTN_WEIGHTS_PER_HEAD": int64(WeightsPerHead), "ATTN_WEIGHTS_AVERAGE": int64(WeightsAverage),
	"ATTN_NAMES_TORCH": int64(NamesTorch), "ATTN_NAMES_HF": int64(NamesHF),
	"ATTN_NAMES_HF_O_PROJ": int64(NamesHFOProj),
	"ATTN_ROPE_HALVES":     int64(RopeHalves), "ATTN_ROPE_ADJACENT": int64(RopeAdjacent),
	"ATTN_BIAS_Q": int64(BiasQ), "ATTN_BIAS_K": int64(BiasK), "ATTN_BIAS_V": int64(BiasV),
	"ATTN_BIAS_O": int64(BiasO), "ATTN_BIAS_ALL": int64(BiasAll),
	"ATTN_QK_NORM_NONE": int64(QKNormNone), "ATTN_QK_NORM_HEAD": int64(QKNormHead),
	"ATTN_QK_NORM_ALL": int64(QKNormAll),
	"ATTN_ALIBI_NONE":  int64(AlibiNone), "ATTN_ALIBI_CAUSAL": int64(AlibiCausal),
	"ATTN_ALIBI_SYMMETRIC": int64(AlibiSymmetric),
	"ATTN_W_Q_NORM":        int64(WeightQNorm), "ATTN_W_K_NORM": int64(WeightKNorm),
	"ATTN_W_SINKS":      int64(WeightSinks),
	"ATTN_MAX_POSITION": MaxPosition,
}

// Used only inside the package, through cgo: the struct sizes of the first
// layouts (the library checks them), the version's parts, the thread limit
// (the library checks it) and the weight file header limit.
var cgoOnly = []string{
	"ATTN_VERSION_MAJOR", "ATTN_VERSION_MINOR", "ATTN_VERSION_PATCH", "ATTN_VERSION_STRING",
	"ATTN_MAX_THREADS", "ATTN_SAFETENSORS_MAX_HEADER", "ATTN_RUNTIME_CONFIG_SIZE_0_1",
	"ATTN_CONFIG_SIZE_0_1", "ATTN_MASK_SIZE_0_1", "ATTN_OPTIONS_SIZE_0_1",
	"ATTN_CACHE_CONFIG_SIZE_0_1", "ATTN_DECODE_MASK_SIZE_0_1", "ATTN_MEMORY_CONFIG_SIZE_0_1",
	"ATTN_ROPE_CONFIG_SIZE_0_2", "ATTN_POSITIONS_SIZE_0_2",
}

// The header this package was compiled against, found as cgo found it.
func headerText(t *testing.T) string {
	out, err := exec.Command("pkg-config", "--variable=includedir", "attn").Output()
	must(t, err)
	raw, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "attn", "attn.h"))
	must(t, err)
	return string(raw)
}

func TestConstantsMatchTheHeader(t *testing.T) {
	c := headerConstants()
	for name, v := range goConstants {
		cv, ok := c[name]
		if !ok {
			t.Errorf("%s: not among the header's constants", name)
		} else if cv != v {
			t.Errorf("%s: C %d, Go %d", name, cv, v)
		}
	}
	// Every #define of the header is exposed or deliberately kept inside.
	known := map[string]bool{"ATTN_ATTN_H": true, "ATTN_API": true}
	for _, n := range cgoOnly {
		known[n] = true
	}
	for _, line := range strings.Split(headerText(t), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "#define ") {
			continue
		}
		name := strings.Fields(line)[1]
		if _, ok := goConstants[name]; !ok && !known[name] {
			t.Errorf("%s: a constant of attn.h the Go package does not cover", name)
		}
	}
	if LibraryVersionNumber() != HeaderVersionNumber || LibraryVersion() != headerVersionString {
		t.Errorf("library %s (%d), header %s (%d)", LibraryVersion(), LibraryVersionNumber(),
			headerVersionString, HeaderVersionNumber)
	}
}

func TestStructLayoutsAsTheCCompilerHasThem(t *testing.T) {
	for name, s := range cgoSizes() {
		if s[0] != s[1] {
			t.Errorf("%s: cgo size %d, C size %d", name, s[0], s[1])
		}
	}
	g, c := cgoOffsets()
	for i := range g {
		if g[i] != c[i] {
			t.Errorf("field %d: cgo offset %d, C offset %d", i, g[i], c[i])
		}
	}
}
