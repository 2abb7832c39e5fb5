#!/usr/bin/env tclsh
# Wrapper around examples/echo_server.tcl for bench/run.sh (the example is
# used unmodified).  Same arguments as the example.  Which package it loads
# is decided by the example itself: WEBSOCKET_PKG set -> that directory is
# appended to auto_path (tcllib, 1.4.2); unset -> the checkout (ours, 1.7.0).
#
# Once the event loop runs, reports on stderr
#     websocket VERSION: LOAD-SCRIPT
# and, if env BENCH_EXPECT_VERSION is set and differs, exits with status 3 so
# that a benchmark can never silently measure the wrong implementation.

after idle {
    set v [package present websocket]
    puts stderr "websocket $v: [package ifneeded websocket $v]"
    flush stderr
    if {[info exists ::env(BENCH_EXPECT_VERSION)] && $v ne $::env(BENCH_EXPECT_VERSION)} {
        puts stderr "expected websocket $::env(BENCH_EXPECT_VERSION), got $v"
        exit 3
    }
}
set argv0 [file join [file dirname [file dirname [file normalize [info script]]]] examples echo_server.tcl]
source $argv0
