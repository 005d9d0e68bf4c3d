# bmaas build entry points.  Every target is safe and cheap to re-run.
#   make dev          .venv with the project installed editable + generated protos
#   make protos       regenerate bmaas/v1 from protos/bmaas/v1/*.proto
#   make guest-image  kernel + initramfs for the server stand-in (cached)
#   make lint         ruff + mypy --strict + import contracts
#   make test         install everything needed, lint, run the whole suite
#   make demo         the main job: a whole local region that keeps running (see README)
#   make demo-down    stop and remove everything make demo started

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(CURDIR)/.cache
GUEST_DIR := $(CACHE)/guest
SYSTEM_PACKAGES := qemu-system-x86 qemu-utils busybox-static cpio iproute2 iputils-ping etcd-server ovmf grub-efi-amd64-bin mtools dosfstools fdisk prometheus openssl dpdk dpdk-dev zsh curl \
	ceph-mon ceph-osd python3-rados python3-rbd qemu-block-extra
PROTO_SRC := $(wildcard protos/bmaas/v1/*.proto)

.PHONY: dev ceph-python protos protos-check guest-image system-deps lint test test-unit demo demo-down bench clean

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

dev: $(VENV)/.stamp protos ceph-python

# Debian's python3-rados/python3-rbd are built for Debian's python3.11, which has
# the ABI of the venv's CPython 3.11: their two extension modules are linked into
# a directory the venv adds to sys.path with a .pth file (no-op without them).
CEPH_EXT := $(VENV)/ceph-ext
ceph-python: $(VENV)/.stamp
	@mkdir -p $(CEPH_EXT); \
	for m in rados rbd; do \
	  so=$$(ls /usr/lib/python3/dist-packages/$$m.cpython-311-*.so 2>/dev/null | head -1); \
	  if [ -n "$$so" ]; then ln -sf "$$so" $(CEPH_EXT)/; else echo "python3-$$m not installed (make system-deps)"; fi; \
	done; \
	echo "$(abspath $(CEPH_EXT))" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/bmaas-ceph.pth

protos: $(VENV)/.stamp
	$(PY) -m tools.genprotos --out .

protos-check: $(VENV)/.stamp
	$(PY) -m tools.genprotos --check

# Installs only the Debian packages that are missing; a no-op afterwards.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

guest-image: system-deps
	images/build.sh $(GUEST_DIR)

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: system-deps dev guest-image lint
	$(PY) -m pytest tests

test-unit: dev
	$(PY) -m pytest tests/unit

demo: system-deps dev guest-image
	$(PY) -m tools.demo up $(if $(PROMETHEUS),--prometheus,)

demo-down: dev
	$(PY) -m tools.demo down

bench: system-deps dev guest-image
	$(PY) -m bench.blk
	$(PY) -m bench.blk --rbd
	$(PY) -m bench.net
	$(PY) -m bench.wipe
	$(PY) -m bench.provision
	$(PY) -m bench.vpc
	$(PY) -m bench.control_plane

clean:
	rm -rf $(VENV) $(CACHE) .mypy_cache .ruff_cache .pytest_cache
