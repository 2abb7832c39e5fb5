#!/usr/bin/env tclsh
# all.tcl --
#
#	Runs every tests/*.test in this interpreter (tcltest -singleproc 1)
#	against the package built in this checkout (target/release), prints
#	tcltest's summary and then a line
#	    all.tcl: N passed, M failed, K skipped
#	for CI, and exits non-zero if any test failed or a test file could not
#	be run.
#
#	    tclsh tests/all.tcl ?tcltest options, e.g. -file send.test -verbose bpe?

package require Tcl 8.6-
package require tcltest 2.2

set testsdir [file dirname [file normalize [info script]]]
set rootdir [file dirname $testsdir]
set auto_path [linsert $auto_path 0 $rootdir]

# The package under test must be ours: version 1.7.0 from libwebsocket
# (Tcl 8.6) or libtcl9websocket (Tcl 9, built by `make TCL_CONFIG=...`).
set libname [expr {[package vsatisfies [package provide Tcl] 9-] ? "libtcl9websocket" : "libwebsocket"}]
set version [package require websocket]
set ifneeded [package ifneeded websocket $version]
if {$version ne "1.7.0" || ![string match *$libname* $ifneeded]} {
    puts stderr "all.tcl: wrong websocket package loaded: $version ($ifneeded); is $libname built?"
    exit 2
}
foreach cmd [info commands ::websocket::*] {
    # Commands of a compiled extension are not procs; tcllib's are.
    if {[info procs $cmd] ne ""} {
        puts stderr "all.tcl: $cmd is a Tcl proc: tcllib's websocket is loaded, not ours"
        exit 2
    }
}
puts "all.tcl: testing websocket $version: $ifneeded"

# A safety net: no test should come near this, every wait is bounded.
after [expr {170 * 1000}] {
    puts stderr "all.tcl: suite exceeded 170 s, aborting"
    exit 3
}

# Totals: cleanupTests resets tcltest's counters when it prints the
# summary, so take them on the way in.
array set totals {Total 0 Passed 0 Skipped 0 Failed 0}
proc take_totals {args} {
    array set ::totals [array get ::tcltest::numTests]
}
trace add execution ::tcltest::cleanupTests enter take_totals

# A test file that dies while being sourced counts as a failure.
set file_errors {}
proc note_source {cmd code result op} {
    set f [lindex $cmd end]
    if {$code == 1 && [string match *.test $f]} {
        lappend ::file_errors [list [file tail $f] $result]
    }
}
trace add execution ::source leave note_source

::tcltest::configure -testdir $testsdir -singleproc 1 \
    -asidefromdir {autobahn peers} -file *.test {*}$argv
::tcltest::runAllTests

trace remove execution ::source leave note_source
foreach fe $file_errors {
    puts "all.tcl: test file [lindex $fe 0] failed to run: [lindex $fe 1]"
}
set failed [expr {$totals(Failed) + [llength $file_errors]}]
puts "all.tcl: $totals(Passed) passed, $failed failed, $totals(Skipped) skipped"
flush stdout
exit [expr {$failed > 0 ? 1 : 0}]
