# libmsgbus - plain GNU Makefile.
#
#   make                      library (static + shared) and examples
#   make check                tests, man lint, man examples, header, exports
#   make check SANITIZE=thread            (or address,undefined)
#   make valgrind | bench | bench-run | install | uninstall | clean
#   build/tools/msgbus        the msgbus command, msgbus(1)
#
# Everything is built under $(B): build/ normally, build-<sanitizers>/ with
# SANITIZE set, so sanitized and plain objects never mix. V=1 shows commands.

VERSION := 0.1.0
MAJOR := $(firstword $(subst ., ,$(VERSION)))

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

INSTALL ?= install
PKG_CONFIG ?= pkg-config
VALGRIND ?= valgrind

comma := ,
SANITIZE ?=
ifeq ($(SANITIZE),)
BUILDDIR ?= build
else
BUILDDIR ?= build-$(subst $(comma),-,$(SANITIZE))
endif
B := $(BUILDDIR)

# User CFLAGS/LDFLAGS still apply; the flags the project needs are appended.
CFLAGS ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread
override LDFLAGS += -pthread

ifneq ($(SANITIZE),)
override CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
override LDFLAGS += -fsanitize=$(SANITIZE)
ifneq ($(filter address undefined,$(subst $(comma), ,$(SANITIZE))),)
override CFLAGS += -fno-sanitize-recover=all
override LDFLAGS += -fno-sanitize-recover=all
endif
# Sanitizer reports are fatal; nothing is suppressed. Slower code gets more
# time before Check's per-test timeout fires.
export TSAN_OPTIONS := halt_on_error=1
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
export CK_TIMEOUT_MULTIPLIER ?= 5
ifneq ($(filter valgrind,$(MAKECMDGOALS)),)
$(error valgrind and SANITIZE do not mix)
endif
endif

# Prototypes live in the module's own header (STYLE.md); the rest is static.
LIB_CFLAGS := -fPIC -fvisibility=hidden -Wmissing-prototypes -Wstrict-prototypes
DEPFLAGS = -MMD -MP

# -z defs proves the .so carries all its dependencies. clang does not link
# the sanitizer runtime into shared objects, so it cannot hold there.
ZDEFS := -Wl,-z,defs
ifneq ($(SANITIZE),)
ifneq ($(shell $(CC) --version 2>/dev/null | grep -c clang),0)
ZDEFS :=
endif
endif

CHECK_CFLAGS = $(shell $(PKG_CONFIG) --cflags check)
CHECK_LIBS = $(shell $(PKG_CONFIG) --libs check)

ifeq ($(V),1)
Q :=
msg = @:
else
Q := @
msg = @printf '  %-8s %s\n' '$(1)' '$(2)'
endif

# ---- sources and outputs ---------------------------------------------------

LIB_SRCS := $(sort $(wildcard lib/*.c lib/*/*.c))
# Tiers, lowest first (DESIGN.md section 2); each calls only those before it
# (make check runs tests/check_tiers.sh).
LIB_TIERS := platform shm ring pubsub reqrep link
# lib/ includes its own headers by tier path: #include "ring/inbox.h".
LIB_INC := -Ilib
LIB_OBJS := $(LIB_SRCS:lib/%.c=$(B)/lib/%.o)
EXAMPLE_SRCS := $(sort $(wildcard examples/*.c))
EXAMPLES := $(EXAMPLE_SRCS:examples/%.c=$(B)/examples/%)
TEST_SRCS := $(sort $(wildcard tests/check_*.c))
TEST_OBJS := $(TEST_SRCS:tests/%.c=$(B)/tests/%.o)
BENCH_SRCS := $(sort $(wildcard tests/perf/*.c))
BENCHES := $(BENCH_SRCS:tests/perf/%.c=$(B)/perf/%)
MAN3 := $(sort $(wildcard man/*.3))
MAN7 := $(sort $(wildcard man/*.7))
MAN1 := $(sort $(wildcard man/*.1))
TOOL_SRCS := $(sort $(wildcard tools/*.c))
TOOL_OBJS := $(TOOL_SRCS:tools/%.c=$(B)/tools/%.o)
TOOL := $(B)/tools/msgbus
TOOL_INSTALLED := $(B)/tools/installed/msgbus
TOOL_LIBDIR := $(B)/tools/installed/.libdir

STATIC := $(B)/libmsgbus.a
SONAME := libmsgbus.so.$(MAJOR)
SHARED := $(B)/libmsgbus.so.$(VERSION)
TEST_BIN := $(B)/tests/check_msgbus
MAP := lib/libmsgbus.map

# Objects are rebuilt when the compiler or flags change (e.g. CC=clang).
STAMP := $(B)/.flags

.PHONY: all check deps valgrind bench bench-run install uninstall clean FORCE
.DEFAULT_GOAL := all

all: $(STATIC) $(SHARED) $(B)/$(SONAME) $(B)/libmsgbus.so $(EXAMPLES) $(TOOL) $(TOOL_INSTALLED)

$(STAMP): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(CC) $(CXX) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

# ---- library ---------------------------------------------------------------

$(B)/lib/%.o: lib/%.c $(STAMP)
	@mkdir -p $(@D)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) -Iinclude $(LIB_INC) $(CFLAGS) $(LIB_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(STATIC): $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@
	$(Q)$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJS) $(MAP)
	$(call msg,LD,$@)
	$(Q)$(CC) -shared $(CFLAGS) $(LDFLAGS) -Wl,-soname,$(SONAME) \
		-Wl,--version-script=$(MAP) $(ZDEFS) -o $@ $(LIB_OBJS)

$(B)/$(SONAME) $(B)/libmsgbus.so: $(SHARED)
	$(Q)ln -sf $(notdir $<) $@

# ---- examples: the shared library, found through the rpath -----------------

$(B)/examples/%.o: examples/%.c $(STAMP)
	@mkdir -p $(@D)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) -Iinclude $(CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/examples/%: $(B)/examples/%.o $(SHARED) $(B)/$(SONAME)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -Wl,-rpath,'$$ORIGIN/..' -o $@ $< $(SHARED)

# ---- the msgbus command: public API only, the shared library ----------------
#
# $(TOOL) finds the library in the build tree through $ORIGIN/..; the copy
# that `make install` puts in $(BINDIR), $(TOOL_INSTALLED), finds it in
# $(LIBDIR).

$(B)/tools/%.o: tools/%.c $(STAMP)
	@mkdir -p $(@D)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) -Iinclude $(CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(TOOL): $(TOOL_OBJS) $(SHARED) $(B)/$(SONAME)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -Wl,-rpath,'$$ORIGIN/..' -o $@ $(TOOL_OBJS) $(SHARED)

# Built by `make`, so that `sudo make install` only copies it; relinked
# when LIBDIR changes.
$(TOOL_LIBDIR): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(LIBDIR)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

$(TOOL_INSTALLED): $(TOOL_OBJS) $(SHARED) $(TOOL_LIBDIR)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -Wl,-rpath,'$(LIBDIR)' -o $@ $(TOOL_OBJS) $(SHARED)

# ---- tests: the static library, so internals can be tested ------------------

# Check, pkg-config and mandoc: installed on a Debian machine that lacks them
# (as root or with sudo -n), or one line naming the command to run.
deps:
	$(Q)bash tests/install_deps.sh

$(B)/tests/%.o: tests/%.c $(STAMP) | deps
	@mkdir -p $(@D)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) $(LIB_INC) -Iinclude $(CHECK_CFLAGS) $(CFLAGS) $(DEPFLAGS) -c -o $@ $<

# --wrap: calls of these library functions from another object go through
# tests/check_main.c's __wrap_<name>, which counts them per thread (clock
# reads, subject checks and hashes, CPU yields, bell rings, inbox puts;
# check_v2, check_poll and check_tcp), or for the process (calls the links
# start without waiting). One link rule serves every build
# (plain, SANITIZE=..., valgrind).
TEST_WRAPS := mb_now_ns mb_subject_check mb_hash mb_yield_cpu mb_bell_ring mb_doorbell_ring \
	mb_inbox_put mb_call_start_nowait
$(TEST_BIN): $(TEST_OBJS) $(STATIC)
	$(if $(TEST_SRCS),,$(error no tests/check_*.c to build))
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) $(TEST_WRAPS:%=-Wl$(comma)--wrap=%) -o $@ $(TEST_OBJS) \
		$(STATIC) $(CHECK_LIBS)

HEADER_TU := \#include <msgbus.h>\nint main(void) { msgbus_options o = MSGBUS_OPTIONS_INIT; (void)o; return msgbus_version() == 0; }\n

check: deps all $(TEST_BIN)
	$(call msg,RUN,$(TEST_BIN))
	$(Q)MSGBUS_BUILD_DIR=$(B) $(TEST_BIN)
	$(Q)CC='$(CC)' bash tests/check_man.sh
	$(Q)if [ -f tests/check_examples.sh ]; then \
		printf '  %-8s %s\n' RUN tests/check_examples.sh; \
		EXAMPLES_DIR=$(B)/examples MSGBUS_BUILD_DIR=$(B) bash tests/check_examples.sh; fi
	$(call msg,RUN,tests/check_tiers.sh)
	$(Q)LIB_TIERS='$(LIB_TIERS)' MSGBUS_BUILD_DIR=$(B) bash tests/check_tiers.sh
	$(call msg,RUN,tests/check_tool.sh)
	$(Q)MSGBUS=$(TOOL) bash tests/check_tool.sh
	$(call msg,RUN,tests/check_deps.sh)
	$(Q)bash tests/check_deps.sh
	$(call msg,HEADER,include/msgbus.h as C++ and as C99)
	$(Q)printf '$(HEADER_TU)' | $(CXX) -x c++ -Wall -Wextra -Werror -pedantic \
		-Iinclude -fsyntax-only -
	$(Q)printf '$(HEADER_TU)' | $(CC) -x c -std=c99 -pedantic -Wall -Wextra -Werror \
		-Iinclude -fsyntax-only -
	$(call msg,EXPORTS,$(SHARED))
	$(Q)syms=$$(nm -D --defined-only $(SHARED) | awk '$$2 != "A" { sub(/@.*/, "", $$3); print $$3 }'); \
	[ -n "$$syms" ] || { echo "$(SHARED) exports nothing" >&2; exit 1; }; \
	bad=0; for s in $$syms; do \
		case $$s in msgbus_*) ;; *) echo "exported symbol without msgbus_ prefix: $$s" >&2; bad=1;; esac; \
		[ -f man/$$s.3 ] || { echo "exported symbol without man page: $$s (man/$$s.3)" >&2; bad=1; }; \
	done; exit $$bad
	@echo '  check passed ($(B))'

# --fair-sched=yes: valgrind runs one thread at a time, and its default lock
# can hand the CPU back to a thread that yields in a spin loop while the
# thread it waits for starves. check_v2's subjects case took over 120 s (once
# 601 s) that way, and 30-38 s with a fair queue; the whole run went from
# 4-14 min in CI to 168 s here.
valgrind: $(TEST_BIN)
	$(Q)CK_FORK=no MSGBUS_TEST_VALGRIND=1 MSGBUS_BUILD_DIR=$(B) CK_TIMEOUT_MULTIPLIER=20 \
		$(VALGRIND) -q --fair-sched=yes --leak-check=full \
		--errors-for-leak-kinds=definite,indirect --error-exitcode=1 $(TEST_BIN)

# ---- chaos: a long run of tests/chaos.c ---------------------------------------
#
#   make chaos [CHAOS_SECONDS=120] [CHAOS_ARGS='-n 3 -S 42 -v']
# Publishers, readers, workers and requesters on one shm:// bus under random
# SIGKILL and SIGSTOP/SIGCONT; make check runs the same harness for a few
# seconds (tests/check_chaos.c). `$(B)/tests/chaos -h` lists the options.

CHAOS_SECONDS ?= 120
CHAOS_BIN := $(B)/tests/chaos

.PHONY: chaos

$(CHAOS_BIN): tests/chaos.c include/msgbus.h $(STATIC)
	@mkdir -p $(@D)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CPPFLAGS) -Iinclude $(CFLAGS) $(LDFLAGS) -o $@ tests/chaos.c $(STATIC)

chaos: $(CHAOS_BIN)
	$(call msg,CHAOS,$(CHAOS_BIN) for $(CHAOS_SECONDS)s)
	$(Q)$(CHAOS_BIN) -s $(CHAOS_SECONDS) $(CHAOS_ARGS)

# ---- benchmarks --------------------------------------------------------------

$(B)/perf/%.o: tests/perf/%.c $(STAMP)
	@mkdir -p $(@D)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CPPFLAGS) $(LIB_INC) -Iinclude $(CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/perf/%: $(B)/perf/%.o $(STATIC)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(STATIC)

bench: $(BENCHES)

bench-run: $(BENCHES)
	$(Q)for b in $(BENCHES); do echo "== $$b"; MSGBUS_BUILD_DIR=$(B) $$b || exit 1; done

# ---- static analysis: cppcheck and clang-tidy over lib/ ----------------------
#
#   make lint [-j2]
# Checks are chosen for defects, not style, and every finding fails. A false
# positive gets an inline suppression with its reason beside it:
# /* cppcheck-suppress ID ; why */ or /* NOLINTNEXTLINE(check): why */.
# cppcheck: warning, portability, performance (not style); posix.cfg makes it
# check descriptors from socket() and open() for leaks.
# clang-tidy: bugprone-*, the clang static analyzer, misc-redundant-expression
# and performance-*, less what is noise here: easily-swappable-parameters and
# reserved-identifier (naming), insecureAPI.DeprecatedOrUnsafeBufferHandling
# (wants Annex K memcpy_s), optin.performance.Padding (shared-memory structs
# are padded to cache lines on purpose). cert-err33-c is not used: it wants
# the result of every snprintf, whose truncation is intended here. And
# `if (strcmp(a, b))` is the house idiom, so suspicious-string-compare only
# flags comparisons with odd constants.

CPPCHECK ?= cppcheck
CLANG_TIDY ?= clang-tidy
CPPCHECK_FLAGS := -q --std=c11 --enable=warning,portability,performance --library=posix \
	--inline-suppr --error-exitcode=1 --suppress=missingIncludeSystem \
	-D_GNU_SOURCE -Iinclude $(LIB_INC)
TIDY_CHECKS := -* bugprone-* clang-analyzer-* misc-redundant-expression performance-* \
	-bugprone-easily-swappable-parameters -bugprone-reserved-identifier \
	-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling \
	-clang-analyzer-optin.performance.Padding
TIDY_FLAGS := -quiet -warnings-as-errors='*' -header-filter='^(lib|include)/' \
	-config='{CheckOptions: [{key: bugprone-suspicious-string-compare.WarnOnImplicitComparison, value: false}]}'
empty :=
space := $(empty) $(empty)
LINT_TIDY := $(subst /,__,$(LIB_SRCS:lib/%.c=lint-tidy-%))

.PHONY: lint lint-cppcheck $(LINT_TIDY)

lint: lint-cppcheck $(LINT_TIDY)
	@echo '  lint passed'

lint-cppcheck:
	$(call msg,CPPCHECK,lib/*.c)
	$(Q)$(CPPCHECK) $(CPPCHECK_FLAGS) $(LIB_SRCS)

$(LINT_TIDY): lint-tidy-%:
	$(call msg,TIDY,lib/$(subst __,/,$*).c)
	$(Q)out=$$($(CLANG_TIDY) $(TIDY_FLAGS) \
		-checks='$(subst $(space),$(comma),$(strip $(TIDY_CHECKS)))' \
		lib/$(subst __,/,$*).c -- -std=c11 -D_GNU_SOURCE -pthread -Iinclude $(LIB_INC) 2>&1); rc=$$?; \
	printf '%s\n' "$$out" | grep -v -x -e '' -e '[0-9]* warnings\{0,1\} generated\.' || :; \
	exit $$rc

# ---- fuzzing: decoders of untrusted input under libFuzzer (clang only) -------
#
#   make fuzz [FUZZ_SECONDS=30]
# Runs each target in turn for FUZZ_SECONDS: fuzz_wire (TCP frame codec),
# fuzz_segment (segment header validation on attach), fuzz_subject (subject
# syntax and matching), fuzz_nats (NATS client protocol parser); `make fuzz-segment` runs one. Each fuzzes a fresh
# copy of tests/fuzz/corpus_<target> in $(B)/fuzz/, so the seeds in git stay
# as they are; a crashing input is saved as $(B)/fuzz/<target>-crash-*.
# UBSan findings abort too, or libFuzzer would only print them. The seeds
# come from tests/fuzz/gen_corpus.c; corpus_nats holds protocol lines as a
# server sends them, written by hand.

FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror
FUZZ_TARGETS := wire segment subject nats
FUZZ_LIB_wire := lib/link/wire.c lib/shm/subject.c
FUZZ_LIB_segment := lib/shm/segment.c
FUZZ_LIB_subject := lib/shm/subject.c
FUZZ_LIB_nats := lib/link/nats_proto.c
FUZZ_BINS := $(FUZZ_TARGETS:%=$(B)/fuzz/fuzz_%)
FUZZ_RUNS := $(FUZZ_TARGETS:%=fuzz-%)

.PHONY: fuzz $(FUZZ_RUNS)

$(FUZZ_BINS): $(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIB_wire) $(FUZZ_LIB_segment) $(FUZZ_LIB_nats) \
		$(wildcard lib/*.h lib/*/*.h) include/msgbus.h
	@mkdir -p $(@D)
	$(call msg,FUZZCC,$@)
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) -Iinclude $(LIB_INC) -o $@ $< $(FUZZ_LIB_$*)

fuzz: $(FUZZ_RUNS)

# Under `make fuzz`, one run at a time even with -j: every target is built
# before the first run, and each run waits for the one before.
ifneq ($(filter fuzz,$(MAKECMDGOALS)),)
fuzz-wire: $(FUZZ_BINS)
fuzz-segment: fuzz-wire
fuzz-subject: fuzz-segment
fuzz-nats: fuzz-subject
endif

$(FUZZ_RUNS): fuzz-%: $(B)/fuzz/fuzz_%
	$(Q)rm -rf $(B)/fuzz/corpus_$* && mkdir -p $(B)/fuzz/corpus_$*
	$(Q)cp tests/fuzz/corpus_$*/* $(B)/fuzz/corpus_$*/
	$(call msg,FUZZ,$< for $(FUZZ_SECONDS)s)
	$(Q)$< -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(B)/fuzz/$*- $(B)/fuzz/corpus_$*

# ---- install -----------------------------------------------------------------

# libmsgbus.pc names directories under the prefix as ${prefix}/..., so a staged
# or moved install works with `pkg-config --define-prefix`.
under_prefix = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

install: $(STATIC) $(SHARED) $(TOOL_INSTALLED)
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man7 \
		$(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	$(Q)$(INSTALL) -m 755 $(TOOL_INSTALLED) $(DESTDIR)$(BINDIR)/msgbus
	$(if $(MAN1),$(Q)$(INSTALL) -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1)
	$(Q)$(INSTALL) -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/libmsgbus.a
	$(Q)$(INSTALL) -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/libmsgbus.so.$(VERSION)
	$(Q)ln -sf libmsgbus.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	$(Q)ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libmsgbus.so
	$(Q)$(INSTALL) -m 644 include/msgbus.h $(DESTDIR)$(INCLUDEDIR)/msgbus.h
	$(if $(MAN3),$(Q)$(INSTALL) -m 644 $(MAN3) $(DESTDIR)$(MANDIR)/man3)
	$(if $(MAN7),$(Q)$(INSTALL) -m 644 $(MAN7) $(DESTDIR)$(MANDIR)/man7)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call under_prefix,$(LIBDIR))|g' \
		-e 's|@INCLUDEDIR@|$(call under_prefix,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(VERSION)|g' \
		libmsgbus.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libmsgbus.pc
	$(Q)chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/libmsgbus.pc

uninstall:
	$(call msg,UNINST,$(DESTDIR)$(PREFIX))
	$(Q)rm -f $(DESTDIR)$(LIBDIR)/libmsgbus.a $(DESTDIR)$(LIBDIR)/libmsgbus.so.$(VERSION) \
		$(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libmsgbus.so \
		$(DESTDIR)$(INCLUDEDIR)/msgbus.h $(DESTDIR)$(PKGCONFIGDIR)/libmsgbus.pc \
		$(MAN3:man/%=$(DESTDIR)$(MANDIR)/man3/%) $(MAN7:man/%=$(DESTDIR)$(MANDIR)/man7/%) \
		$(DESTDIR)$(BINDIR)/msgbus $(MAN1:man/%=$(DESTDIR)$(MANDIR)/man1/%)

clean:
	$(call msg,CLEAN,build build-*)
	$(Q)rm -rf build build-* $(B)

FORCE:

# Keep the objects of examples and benchmarks between runs.
.SECONDARY:

-include $(wildcard $(B)/*/*.d $(B)/*/*/*.d)
