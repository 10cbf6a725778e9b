# sluice — top-level build. Out of tree into build/; quiet unless V=1.
#   make            build bpf object + skeleton, sluiced, sluicectl
#   make test       install deps, build, run unit + integration tests (root)
#   make demo       install deps, build, run the demo on built-in defaults (root)
#   make bench      install deps, build, run the benchmark (root)

BUILD     ?= build
V         ?= 0
ifeq ($(V),0)
Q := @
msg = @printf '  %-8s %s\n' $(1) $(2)
else
Q :=
msg =
endif

CC        ?= cc
CLANG     ?= clang
BPFTOOL   ?= bpftool
ARCH      := $(shell uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')

PKGS      := libbpf openssl yaml-0.1 libnftnl libmnl libidn2 jansson libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

LLHTTP_SRC_DIR ?= /usr/share/llhttp
LLHTTP_INC_DIR ?= /usr/share/include/llhttp

CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation -D_GNU_SOURCE \
             -fno-strict-aliasing -Iinclude -Iuser -I$(BUILD) -I$(LLHTTP_INC_DIR) $(PKG_CFLAGS)
LDLIBS    += $(PKG_LIBS) -lpthread

BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -Iinclude -I$(BUILD) -Ibpf

MAINS     := user/sluiced.c user/sluicectl.c
LIB_SRCS  := $(filter-out $(MAINS),$(wildcard user/*.c))
LIB_OBJS  := $(LIB_SRCS:user/%.c=$(BUILD)/user/%.o)
LLHTTP_OBJS := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
UNIT_SRCS := $(wildcard tests/unit/*_test.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/*_fuzz.c)

.PHONY: all clean test unit integration demo bench deps fuzz install
all: $(BUILD)/sluiced $(BUILD)/sluicectl $(BUILD)/sluice.bpf.o

$(BUILD)/vmlinux.h:
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/sluice.bpf.o: bpf/sluice.bpf.c $(wildcard bpf/lib/*.h) $(wildcard include/sluice/*_kern_user.h) $(BUILD)/vmlinux.h
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/sluice.skel.h: $(BUILD)/sluice.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name sluice_bpf > $@.tmp && mv $@.tmp $@

$(BUILD)/user/%.o: user/%.c $(wildcard user/*.h) $(wildcard include/sluice/*.h) $(BUILD)/sluice.skel.h
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

# llhttp ships as C sources in Debian's node-llhttp; compiled as-is, not our code.
$(BUILD)/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -O2 -g -fPIC -I$(LLHTTP_INC_DIR) -c $< -o $@

$(BUILD)/libsluice.a: $(LIB_OBJS) $(LLHTTP_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/sluiced: $(BUILD)/user/sluiced.o $(BUILD)/libsluice.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sluicectl: $(BUILD)/user/sluicectl.o $(BUILD)/libsluice.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsluice.a
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -Wno-missing-field-initializers -o $@ $< $(BUILD)/libsluice.a $(LDLIBS) -lcriterion

deps:
	$(Q)scripts/install-deps.sh

unit: $(UNIT_BINS)
	$(Q)scripts/run-unit.sh $(UNIT_BINS)

integration: all
	$(Q)tests/integration/run.sh

test: deps
	$(Q)$(MAKE) --no-print-directory all $(UNIT_BINS)
	$(Q)scripts/run-tests.sh

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/demo.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/bench.sh

fuzz: $(BUILD)/libsluice.a
	$(Q)scripts/fuzz.sh $(FUZZ_SRCS)

clean:
	rm -rf $(BUILD)
