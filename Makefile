# fedbatch: build, test and install.
#
#   make demo      install what is missing, build, run a whole federation
#   make test      install what is missing, build, run every test
#   make build     release build (.build/release/fedbatch), Swift runtime linked in
#   make deb       Debian package in dist/, checked with lintian
#   make install   PREFIX=/usr/local
#   make man       check the man pages render without warnings
#   make deps      install Debian packages and the test venv (idempotent)
#   make fuzz      run every libFuzzer target for FUZZ_SECONDS (default 120)
#   make lint      the style gate (swift-format, 120 columns); make format fixes what it can

PREFIX  ?= /usr/local
SWIFT   ?= swift
VENV    ?= .venv
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Build: the C libraries (and pkg-config to find them). Tests: gnupg, zstd,
# tar, Debian's Python with venv, numpy and a CPU PyTorch; scikit-learn for the
# breast-cancer table of examples/tabular (it ships inside it). Data: Debian's
# Fashion-MNIST. systemd only for systemd-analyze, which checks the units in
# examples/systemd/ (nothing is started). Packaging: dpkg-dev and lintian.
# Operations tests: prometheus for promtool, python3-yaml for the Kubernetes
# manifests, chromium and python3-pil to render and measure `fedbatch
# report`, util-linux for unshare.
APT_PACKAGES := pkg-config libarchive-dev libgpgme-dev libzstd-dev libssl-dev libcurl4-openssl-dev libxml2-dev \
                libopenblas-dev zlib1g-dev libsqlite3-dev \
                gnupg zstd tar time bc python3 python3-venv python3-numpy python3-torch \
                python3-sklearn groff-base dataset-fashion-mnist systemd \
                dpkg-dev binutils lintian prometheus python3-yaml python3-pil chromium util-linux strace

.PHONY: all deps build deb debug test demo install uninstall man clean bench bench-deps fuzz lint format

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# A venv whose NumPy is 2 shadows Debian's NumPy 1, which Debian's PyTorch
	@# is built against: it is made again.
	@if ! $(VENV)/bin/python -c 'import numpy, safetensors, torch, moto.server, cheroot' 2>/dev/null || \
	    $(VENV)/bin/python -c 'import numpy, sys; sys.exit(not numpy.__version__.startswith("2"))' 2>/dev/null; then \
	  echo "make deps: creating $(VENV) for the interop tests"; \
	  rm -rf $(VENV) && /usr/bin/python3 -m venv --system-site-packages $(VENV) && \
	  $(VENV)/bin/pip install -q -r Tests/Fixtures/requirements.txt; \
	fi
	@if ! .venv-flower/bin/python -c 'import flwr, safetensors, numpy, dp_accounting' 2>/dev/null; then \
	  echo "make deps: creating .venv-flower for the Flower oracle tests"; \
	  rm -rf .venv-flower && /usr/bin/python3 -m venv .venv-flower && \
	  .venv-flower/bin/pip install -q -r Tests/Fixtures/flower-requirements.txt; \
	fi

# The release binary links the Swift runtime statically and carries no
# RUNPATH, so it runs where no Swift toolchain is installed (an air-gapped
# site): it needs only Debian's own libraries.
build: deps
	$(SWIFT) build -c release --product fedbatch --static-swift-stdlib --disable-local-rpath \
	  -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now

# The Debian package: binary, man pages, examples, systemd units. lintian
# must report nothing (warnings and errors fail the build).
deb: build
	@deb=$$(packaging/deb/build.sh .build/release/fedbatch dist) && \
	  lintian --fail-on error,warning "$$deb" && \
	  echo "$$deb"

debug: deps
	$(SWIFT) build --build-tests

# The main job on built-in defaults: a 10-site federation on Fashion-MNIST.
demo: build
	examples/demo.sh

# The end-to-end tests run the debug binary, so it is built first. A run
# takes a few minutes; the timeout turns a hang, should one ever come back,
# into a failure long before CI's limit.
TEST_TIMEOUT ?= 1500
test: lint debug deb
	FEDBATCH_PYTHON=$(CURDIR)/$(VENV)/bin/python FEDBATCH_FLOWER_PYTHON=$(CURDIR)/.venv-flower/bin/python \
	  FEDBATCH_BIN=$(CURDIR)/.build/debug/fedbatch FEDBATCH_RELEASE_BIN=$(CURDIR)/.build/release/fedbatch \
	  FEDBATCH_DEB=$(CURDIR)/dist/fedbatch_$$(.build/release/fedbatch --version)_$$(dpkg --print-architecture).deb \
	  timeout --kill-after=30 $(TEST_TIMEOUT) $(SWIFT) test --disable-xctest

# Benchmarks run on release builds against references in the same run; see
# BENCHMARKS.md. The reference venv holds PyPI's torch (large download).
bench-deps: deps
	@if ! .venv-bench/bin/python -c 'import torch, safetensors' 2>/dev/null; then \
	  echo "make bench-deps: creating .venv-bench (PyPI torch, several GB)"; \
	  rm -rf .venv-bench && python3 -m venv .venv-bench && \
	  .venv-bench/bin/pip install -q -r bench/requirements.txt; \
	fi

SCALE_FED ?= /tmp/fb-scale/fed
bench: build bench-deps
	@mkdir -p bench/out
	bench/gemm.sh | tee bench/out/gemm.md
	bench/train.sh | tee bench/out/train.md
	bench/merge.sh | tee bench/out/merge.md
	CODEC=int8 bench/merge.sh | tail -1 | tee -a bench/out/merge.md
	bench/codecs.sh | tee bench/out/codecs.md
	bench/codec-error.sh | tee bench/out/codec-error.md
	BUNDLES=20 ARCH=mlp:1024-1024-10 bench/merge.sh | tail -1 | tee bench/out/merge-rss.md
	BUNDLES=200 ARCH=mlp:1024-1024-10 bench/merge.sh | tail -1 | tee -a bench/out/merge-rss.md
	bench/late-sites.sh | tee bench/out/late-sites.md
	bench/tabular.sh | tee bench/out/tabular.md
	bench/audit.sh | tee bench/out/audit.md
	STRATEGY=fedadam bench/audit.sh | tail -1 | tee -a bench/out/audit.md
	PYTHON=$(CURDIR)/$(VENV)/bin/python examples/pytorch/federate-cnn.sh | tee bench/out/cnn.md
	bench/robust-merge.sh | tee bench/out/robust-merge.md
	bench/strategies.sh byzantine | tee bench/out/byzantine.md
	bench/strategies.sh honest | tee bench/out/honest.md
	bench/strategies.sh dp | tee bench/out/dp.md
	@# 1000 sites with their own keys and bundles, made once (about 10 minutes).
	[ -d $(SCALE_FED)/bundles ] || bench/sites.sh $(SCALE_FED) 1000
	FED=$(SCALE_FED) bench/scale.sh | tee bench/out/scale.md
	FED=$(SCALE_FED) bench/encrypt.sh | tee bench/out/encrypt.md
	bench/transfers.sh | tee bench/out/transfers.md
	bench/included.sh | tee bench/out/included.md
	bench/signatures.sh | tee bench/out/signatures.md
	bench/stream.sh | tee bench/out/stream.md

# libFuzzer targets for every parser of untrusted bytes (not part of
# make test, which only replays the corpus). FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 120
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) Tests/Fuzz/run.sh

# The style gate: swift-format (it ships with the toolchain) in lint mode
# with the checked-in .swift-format (120 columns), which fails on any
# finding, and a line-length check under Sources/ for what the formatter
# cannot break (string literals, comments). `make format` rewrites the
# tree in place.
FORMAT_PATHS := Sources Tests Package.swift
lint:
	$(SWIFT) format lint --strict --configuration .swift-format --recursive --parallel $(FORMAT_PATHS)
	@long=$$(find Sources -name '*.swift' -exec awk 'length > 120 {print FILENAME ":" FNR ": " length " columns"}' {} +); \
	  if [ -n "$$long" ]; then echo "$$long"; echo "make lint: lines over 120 columns under Sources/"; exit 1; fi
	@echo "make lint: clean"

format:
	$(SWIFT) format format --configuration .swift-format --in-place --recursive --parallel $(FORMAT_PATHS)

man:
	@for page in man/*.[157]; do \
	  out=$$(LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 $$page 2>&1); \
	  if [ -n "$$out" ]; then echo "$$page: $$out"; exit 1; fi; \
	done; echo "man pages render cleanly"

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 0755 .build/release/fedbatch $(DESTDIR)$(PREFIX)/bin/fedbatch
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 man/*.7 $(DESTDIR)$(PREFIX)/share/man/man7/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/fedbatch
	cd man && for p in *.1; do rm -f $(DESTDIR)$(PREFIX)/share/man/man1/$$p; done
	cd man && for p in *.5; do rm -f $(DESTDIR)$(PREFIX)/share/man/man5/$$p; done
	cd man && for p in *.7; do rm -f $(DESTDIR)$(PREFIX)/share/man/man7/$$p; done

clean:
	rm -rf .build .build-fuzz dist
