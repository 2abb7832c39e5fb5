# websocket for Tcl, in Rust.
#   make            build the extension (target/release/libwebsocket.so)
#   make TCL_CONFIG=/opt/tcl9/lib/tclConfig.sh
#                   build it for Tcl 9 (target/release/libtcl9websocket.so,
#                   compiled in target/tcl9); the checkout's pkgIndex.tcl
#                   loads whichever fits the running tclsh
#   make test       every test: Rust unit tests (release, then debug: overflow
#                   checks and debug assertions on), then the tcltest suite
#                   in tclsh (TCLSH defaults to TCL_CONFIG's tclsh, e.g. tclsh9.0)
#   make demo       run the example echo server and its web page
#   make doc        the manual, doc/websocket.man (doctools), rendered by
#                   tcllib's dtplite: target/doc/websocket.n (man page) and
#                   target/doc/websocket.html
#   make install    install for a plain tclsh (PREFIX=/usr/local, DESTDIR honoured):
#                   every library built so far (8.6 and, if built, Tcl 9), and
#                   the man page as $(PREFIX)/share/man/mann/websocket.n
#                   (`man n websocket`; skipped, saying so, without dtplite)
#   make autobahn   Autobahn|Testsuite, server and client roles

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib/tcltk
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
PKGDIR  := $(DESTDIR)$(LIBDIR)/websocket$(VERSION)
LIB     := target/release/libwebsocket.so
LIB9    := target/release/libtcl9websocket.so
MANDIR  ?= $(PREFIX)/share/man
DTPLITE ?= dtplite
MANPAGE := target/doc/websocket.n
HTMLDOC := target/doc/websocket.html

# The Tcl to build for: TCL_CONFIG names its tclConfig.sh (build.rs reads it;
# default: the system's Tcl 8.6). A Tcl 9 build has different C (its stubs
# table and sizes) and Rust (cfg(tcl9)), so it gets a cargo target folder of
# its own and the library Tcl 9's name, beside the 8.6 one.
TCL_CONFIG ?=
CARGO_DIR :=
ifneq ($(strip $(TCL_CONFIG)),)
TCL_VARS  := $(shell sh -c '. "$$0" && echo "$$TCL_MAJOR_VERSION $$TCL_VERSION $$TCL_EXEC_PREFIX"' '$(TCL_CONFIG)')
TCL_MAJOR := $(word 1,$(TCL_VARS))
TCLSH_CONFIG := $(word 3,$(TCL_VARS))/bin/tclsh$(word 2,$(TCL_VARS))
TCLSH   ?= $(if $(wildcard $(TCLSH_CONFIG)),$(TCLSH_CONFIG),tclsh)
export TCL_CONFIG
ifeq ($(TCL_MAJOR),9)
CARGO_DIR := --target-dir target/tcl9
endif
else
TCL_MAJOR := 8
TCLSH   ?= tclsh
endif

.PHONY: all build test unit tcltest demo doc install uninstall autobahn bench clean

all: build

build:
ifeq ($(TCL_MAJOR),9)
	cargo build --release $(CARGO_DIR)
	mkdir -p target/release
	cp target/tcl9/release/libwebsocket.so $(LIB9).tmp
	mv -f $(LIB9).tmp $(LIB9)
else
	cargo build --release
endif

unit:
	cargo test --release $(CARGO_DIR)
	cargo test $(CARGO_DIR)

tcltest: build
	$(TCLSH) tests/all.tcl

test: unit tcltest

demo: build
	$(TCLSH) examples/echo_server.tcl -port 8080 -page examples/echo.html

# The manual, rendered by tcllib's dtplite (`doc` is also the name of the
# folder it lives in, hence .PHONY). Each page is written to a .tmp first,
# so a failed run leaves no page that looks up to date.
doc: $(MANPAGE) $(HTMLDOC)

$(MANPAGE): doc/websocket.man
	@command -v $(DTPLITE) >/dev/null 2>&1 || { echo "make doc: $(DTPLITE) not found (tcllib's doctools processor: apt-get install tcllib)" >&2; exit 1; }
	mkdir -p $(@D)
	$(DTPLITE) -o $@.tmp nroff doc/websocket.man
	mv -f $@.tmp $@

$(HTMLDOC): doc/websocket.man
	@command -v $(DTPLITE) >/dev/null 2>&1 || { echo "make doc: $(DTPLITE) not found (tcllib's doctools processor: apt-get install tcllib)" >&2; exit 1; }
	mkdir -p $(@D)
	$(DTPLITE) -o $@.tmp html doc/websocket.man
	mv -f $@.tmp $@

# Installs each library built (8.6 always, Tcl 9 if `make TCL_CONFIG=...` made
# it) and a pkgIndex.tcl that loads the one for the running Tcl, as the
# checkout's pkgIndex.tcl does.
install: build
	install -d $(PKGDIR)
	if [ -f $(LIB) ]; then install -m 0755 $(LIB) $(PKGDIR)/libwebsocket.so; fi
	if [ -f $(LIB9) ]; then install -m 0755 $(LIB9) $(PKGDIR)/libtcl9websocket.so; fi
	printf '%s\n' \
	  '# websocket $(VERSION): loads the library built for the running Tcl' \
	  '# (libwebsocket for 8.6, libtcl9websocket for 9), if it was installed.' \
	  'if {![package vsatisfies [package provide Tcl] 8.6-]} {return}' \
	  'apply {{dir} {' \
	  '    set name [expr {[package vsatisfies [package provide Tcl] 9-] ? "libtcl9websocket" : "libwebsocket"}]' \
	  '    set lib [file join $$dir $$name[info sharedlibextension]]' \
	  '    if {![file exists $$lib]} {return}' \
	  '    package ifneeded websocket $(VERSION) "[list load $$lib Websocket]; [list if {[package provide websocket] eq ""} {interp invokehidden {} websocket_reinit}]"' \
	  '}} $$dir' \
	  > $(PKGDIR)/pkgIndex.tcl
	@if command -v $(DTPLITE) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory $(MANPAGE) && \
	    echo "install -m 0644 $(MANPAGE) $(DESTDIR)$(MANDIR)/mann/websocket.n" && \
	    install -d $(DESTDIR)$(MANDIR)/mann && \
	    install -m 0644 $(MANPAGE) $(DESTDIR)$(MANDIR)/mann/websocket.n; \
	else \
	    echo "make install: $(DTPLITE) not found (it comes with tcllib): the man page websocket.n was skipped; the libraries are installed"; \
	fi

uninstall:
	rm -rf $(PKGDIR)
	rm -f $(DESTDIR)$(MANDIR)/mann/websocket.n

autobahn: build
	bash tests/autobahn/run.sh

bench: build
	bash bench/run.sh

clean:
	cargo clean
