# postformer build.
#
#   make            build build/postformer, build/postformer.so and build/libpostformer.a
#   make deps       install the Debian packages that are missing (nothing when all are there)
#   make run        deps + build, then open the default demo (examples/tour.lua)
#   make test       deps + build, then every test; the last line is "N passed, N failed"
#   make bench      deps + build, then the benchmarks beside PyTorch (Debian's python3-torch)
#   make test-gpu   the cuda backend against the cpu, kernel by kernel (tests/gpu/test_parity.c);
#                   prints "skipped: no GPU" and succeeds where there is none
#   make bench-gpu  postformer on cuda beside PyTorch/transformers on the same GPU (tests/gpu/bench_gpu.sh)
#   make SAN=1 ...  the same with AddressSanitizer + UndefinedBehaviorSanitizer (in build-san/)
#   make fuzz       the safetensors parser under libFuzzer (clang, ASan + UBSan) for FUZZ_TIME s (60)
#   make clean
#
# The CUDA backend (kernels/cuda/*.cu) is built when nvcc is found (NVCC=... to point at one,
# NVCC= to build CPU-only); the backend is chosen at run time either way.

PKGS      := liblua5.4-dev lua5.4 libncurses-dev libreadline-dev libopenblas-dev lua-busted \
             libcmocka-dev pkg-config tmux libpng-dev libjansson-dev
BENCH_PKGS := python3-torch
FUZZ_PKGS  := clang libclang-rt-14-dev

SAN ?= 0
ifeq ($(SAN),1)
BUILD     ?= build-san
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT       := -O1 -g
else
BUILD     ?= build
SANFLAGS  :=
OPT       := -O3 -g
endif

NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })

# The toolkit's home is where nvcc really lives (a symlink such as /usr/local/bin/nvcc resolved);
# its libraries are looked for where toolkits put them. An nvcc without libcublas and libcudart
# beside it (CI has one) cannot link the backend: the build is CPU-only then, and says so.
ifneq ($(NVCC),)
CUDA_HOME    := $(patsubst %/bin/nvcc,%,$(realpath $(shell command -v $(NVCC) 2>/dev/null)))
CUDA_LIB_DIR := $(firstword $(foreach d,$(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib \
                  $(CUDA_HOME)/lib /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu, \
                  $(if $(and $(wildcard $(d)/libcublas.so),$(wildcard $(d)/libcudart.so)),$(d))))
ifeq ($(CUDA_LIB_DIR),)
$(info note: $(NVCC) has no libcublas.so and libcudart.so beside it; building CPU-only)
NVCC :=
endif
endif

PKG_CFLAGS = $(shell pkg-config --cflags lua5.4 openblas ncursesw readline libpng jansson 2>/dev/null)
LUA_LIBS   = $(shell pkg-config --libs lua5.4 2>/dev/null)
BLAS_LIBS  = $(shell pkg-config --libs openblas 2>/dev/null)
TUI_LIBS   = $(shell pkg-config --libs ncursesw readline 2>/dev/null)
PNG_LIBS   = $(shell pkg-config --libs libpng 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)
# jansson parses the JSON of safetensors headers, config.json and tokenizer.json (engine/safetensors.c)
JSON_LIBS  = $(shell pkg-config --libs jansson 2>/dev/null)

VERSION   := 0.1.0
WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
             -Wformat=2 -Wvla -Werror
CFLAGS    += -std=c11 $(OPT) -fPIC -fopenmp $(WARN) $(SANFLAGS) -I. $(PKG_CFLAGS) \
             -D_GNU_SOURCE -DPF_VERSION='"$(VERSION)"' -MMD -MP
LDFLAGS   += -fopenmp $(SANFLAGS)
LDLIBS    := $(BLAS_LIBS) $(JSON_LIBS) -lm

ENGINE_SRC := $(wildcard engine/*.c engine/layers/*.c kernels/*.c kernels/cpu/*.c)
CUDA_SRC   := $(wildcard kernels/cuda/*.cu)
SCRIPT_SRC := $(wildcard scripts/*.c)
TUI_SRC    := $(wildcard tui/*.c)
TEST_SRC   := $(wildcard tests/c/test_*.c)
TESTLIB_SRC := $(filter-out $(TEST_SRC),$(wildcard tests/c/*.c))

ifneq ($(NVCC),)
ifneq ($(CUDA_SRC),)
CFLAGS     += -DPF_HAVE_CUDA
# machine code for Ampere (sm_80) and Hopper (sm_90, the H100/H200), PTX of compute_90 for newer
NVCCFLAGS  := -O3 -std=c++20 -I. -Xcompiler -fPIC -Xcompiler -Wall -Xcompiler -Wextra -Werror all-warnings \
              --expt-relaxed-constexpr -gencode arch=compute_80,code=sm_80 \
              -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 -DPF_HAVE_CUDA -MMD -MP
CUDA_OBJ   := $(CUDA_SRC:%.cu=$(BUILD)/obj/%.o)
LDLIBS     += -L$(CUDA_LIB_DIR) -Wl,-rpath,$(CUDA_LIB_DIR) -lcublas -lcudart -lstdc++
endif
endif

ENGINE_OBJ  := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o) $(CUDA_OBJ)
LUA_EMBED   := $(wildcard scripts/*_lua.S)
SCRIPT_OBJ  := $(SCRIPT_SRC:%.c=$(BUILD)/obj/%.o) $(LUA_EMBED:%.S=$(BUILD)/obj/%.o)
TUI_OBJ     := $(TUI_SRC:%.c=$(BUILD)/obj/%.o)
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN    := $(TEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

LIB := $(BUILD)/libpostformer.a
SO  := $(BUILD)/postformer.so
BIN := $(BUILD)/postformer

BENCH := $(BUILD)/bench

.PHONY: all deps bench-deps fuzz-deps run test bench clean test-gpu bench-gpu fuzz
.DELETE_ON_ERROR:
.SECONDARY:

all: $(BIN) $(SO) $(TEST_BIN) $(BENCH)

# Install the Debian packages of a list that are not there yet (with sudo when not root).
install_missing = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# ---- dependencies -------------------------------------------------------------------------------
deps:
	@$(call install_missing,$(PKGS))

bench-deps: deps
	@$(call install_missing,$(BENCH_PKGS))

fuzz-deps:
	@$(call install_missing,$(FUZZ_PKGS))

# Objects depend on the flags they were compiled with: a change of flags (PF_HAVE_CUDA appearing,
# SAN, ...) rebuilds everything instead of linking objects built for another configuration.
FLAGS_STAMP := $(BUILD)/flags.stamp
FLAGS_NOW   := $(CC) $(CFLAGS) | $(NVCC) $(NVCCFLAGS)
$(shell mkdir -p $(BUILD); [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = '$(FLAGS_NOW)' ] || echo '$(FLAGS_NOW)' > $(FLAGS_STAMP))

# ---- objects ------------------------------------------------------------------------------------
$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  NVCC  $<"
	@$(NVCC) $(NVCCFLAGS) -c $< -o $@

# the Lua half of the module (scripts/NAME.lua, embedded by scripts/NAME_lua.S) in the .so and the program
$(BUILD)/obj/scripts/%_lua.o: scripts/%_lua.S scripts/%.lua
	@mkdir -p $(dir $@)
	$(CC) -c -I. $< -o $@

$(LIB): $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(SO): $(SCRIPT_OBJ) $(LIB)
	$(CC) -shared $(LDFLAGS) -o $@ $(SCRIPT_OBJ) $(LIB) $(PNG_LIBS) $(LDLIBS)

$(BIN): $(TUI_OBJ) $(SCRIPT_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(TUI_OBJ) $(SCRIPT_OBJ) $(LIB) $(LUA_LIBS) $(TUI_LIBS) $(PNG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/c/%.o $(TESTLIB_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(CMOCKA_LIBS) $(LDLIBS)

# the drawing primitives' tests link the drawing code itself (no curses, no Lua)
$(BUILD)/tests/test_draw: $(BUILD)/obj/tui/grid.o $(BUILD)/obj/scripts/draw.o

$(BENCH): $(BUILD)/obj/tests/bench/bench.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# ---- programs -----------------------------------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all
	$(BIN)

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tests/run_all.sh

bench: bench-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tests/bench/run_bench.sh

# cpu against cuda, kernel by kernel and on a small model; "skipped: no GPU" where there is none
GPU_TEST := $(BUILD)/tests/gpu/test_parity
$(GPU_TEST): $(BUILD)/obj/tests/gpu/test_parity.o $(BUILD)/obj/tests/c/learn_mqar.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)

test-gpu: $(GPU_TEST)
	$(GPU_TEST)

# cuda against PyTorch eager (transformers) on the GPU: tokens/s, us/token, attention TFLOP/s
bench-gpu: $(BENCH) $(GPU_TEST)
	@BUILD=$(BUILD) sh tests/gpu/bench_gpu.sh

# the safetensors parser under libFuzzer: the committed corpus is read, new finds go to build-fuzz/corpus
FUZZ_TIME ?= 60
FUZZ_BIN  := build-fuzz/fuzz_safetensors
$(FUZZ_BIN): tests/fuzz/fuzz_safetensors.c engine/safetensors.c engine/error.c engine/safetensors.h
	@mkdir -p $(dir $@)
	clang -std=c11 -g -O1 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  $(shell pkg-config --cflags jansson) -o $@ tests/fuzz/fuzz_safetensors.c engine/safetensors.c engine/error.c \
	  $(JSON_LIBS)

fuzz: deps fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@mkdir -p build-fuzz/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_TIME) -timeout=5 -rss_limit_mb=2048 -dict=tests/fuzz/safetensors.dict \
	  -print_final_stats=1 build-fuzz/corpus tests/fuzz/corpus

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
