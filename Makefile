# websocket for Tcl, in Rust.
#   make            build the extension (target/release/libwebsocket.so)
#   make test       every test: Rust unit tests (release, then debug: overflow
#                   checks and debug assertions on), then the tcltest suite
#   make demo       run the example echo server and its web page
#   make install    install for a plain tclsh (PREFIX=/usr/local, DESTDIR honoured)
#   make autobahn   Autobahn|Testsuite, server and client roles

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib/tcltk
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
PKGDIR  := $(DESTDIR)$(LIBDIR)/websocket$(VERSION)
TCLSH   ?= tclsh
LIB     := target/release/libwebsocket.so

.PHONY: all build test unit tcltest demo install uninstall autobahn bench clean

all: build

build:
	cargo build --release

unit:
	cargo test --release
	cargo test

tcltest: build
	$(TCLSH) tests/all.tcl

test: unit tcltest

demo: build
	$(TCLSH) examples/echo_server.tcl -port 8080 -page examples/echo.html

install: build
	install -d $(PKGDIR)
	install -m 0755 $(LIB) $(PKGDIR)/libwebsocket.so
	printf '%s\n' \
	  'if {![package vsatisfies [package provide Tcl] 8.6]} {return}' \
	  'package ifneeded websocket $(VERSION) "[list load [file join $$dir libwebsocket.so] Websocket]; [list if {[package provide websocket] eq ""} {interp invokehidden {} websocket_reinit}]"' \
	  > $(PKGDIR)/pkgIndex.tcl

uninstall:
	rm -rf $(PKGDIR)

autobahn: build
	bash tests/autobahn/run.sh

bench: build
	bash bench/run.sh

clean:
	cargo clean
