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
#	Skipped tests: every test skipped because a constraint is not met is
#	listed with the constraint and why it is not met (::skip_why, set
#	where the constraint is defined). With CI=true in the environment each
#	such skip counts as a failure: a green CI run means every test ran.
#	(Tests left out on purpose with -match/-skip are not counted.)
#
#	Time: each test file has its own bound (file_limit below, seconds);
#	a file that outlives it aborts the run with a message naming it and
#	the test it was in. The suite's limit is the sum of the files' bounds,
#	so it never cuts short a run whose files each stay within theirs.
#	Each file's duration is printed after it.
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

# Per-file bounds, in seconds: several times the file's duration on the
# 2-core development machine (printed by this script: at most 12 s for
# the files under the default, hostile.test 21-31 s, defaults.test 31 s,
# fairness.test 3-5 s), so a slow machine passes. valgrind.test gives valgrind up to 150 s (and
# 5 more to kill it).
set file_limit_default 45
array set file_limit {
    defaults.test  60
    fairness.test  60
    hostile.test   120
    valgrind.test  200
}
proc file_limit {f} {
    if {[info exists ::file_limit($f)]} {return $::file_limit($f)}
    return $::file_limit_default
}

# A safety net: no test should come near these, every wait is bounded.
set suite_limit 0
foreach f [glob -nocomplain -tails -directory $testsdir *.test] {
    incr suite_limit [file_limit $f]
}
after [expr {$suite_limit * 1000}] {
    puts stderr "all.tcl: suite exceeded $::suite_limit s (the sum of its files' bounds), aborting"
    exit 3
}
set current_test ""
proc note_test {cmd op} {
    set ::current_test [lindex $cmd 1]
}
trace add execution ::tcltest::test enter note_test
proc file_start {cmd op} {
    set f [lindex $cmd end]
    if {![string match *.test $f]} return
    set tail [file tail $f]
    set lim [file_limit $tail]
    set ::file_t0 [clock milliseconds]
    set ::current_test ""
    set ::file_guard [after [expr {$lim * 1000}] [list apply {{tail lim} {
        puts stderr "all.tcl: $tail exceeded its bound of $lim s (in test $::current_test), aborting"
        exit 3
    }} $tail $lim]]
}
proc file_end {cmd code result op} {
    set f [lindex $cmd end]
    if {![string match *.test $f] || ![info exists ::file_guard]} return
    after cancel $::file_guard
    unset ::file_guard
    set secs [format %.1f [expr {([clock milliseconds] - $::file_t0) / 1000.0}]]
    lappend ::durations [file tail $f] $secs
    puts "all.tcl: [file tail $f] took $secs s (bound [file_limit [file tail $f]] s)"
}
trace add execution ::source enter file_start
trace add execution ::source leave file_end

# Tests skipped because a constraint is not met: {name constraint} each.
# tcltest calls _noticeSkipped for exactly these (not for -match/-skip).
set skipped_tests {}
proc note_skip {cmd op} {
    lassign $cmd - name constraint
    lappend ::skipped_tests [list $name $constraint]
}
set skip_names [expr {[info commands ::tcltest::_noticeSkipped] ne ""}]
if {$skip_names} {
    trace add execution ::tcltest::_noticeSkipped enter note_skip
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
trace remove execution ::source enter file_start
trace remove execution ::source leave file_end
set failed [expr {$totals(Failed) + [llength $file_errors]}]
set ci [expr {[info exists env(CI)] && [string is true -strict $env(CI)]}]
# Skips that are no missing tool: a test written for the other Tcl
# version, and the constraints CI_ALLOW_SKIP names (.ci/run says why).
set allowed_skips {tcl9 !tcl9}
if {[info exists env(CI_ALLOW_SKIP)]} {
    lappend allowed_skips {*}$env(CI_ALLOW_SKIP)
}
set counted_skips 0
foreach sk $skipped_tests {
    lassign $sk name c
    set why [expr {[info exists ::skip_why($c)] ? ": $::skip_why($c)" : ""}]
    if {$c in $allowed_skips} {
        puts "all.tcl: skipped $name, constraint $c not met (allowed)$why"
        continue
    }
    incr counted_skips
    puts "all.tcl: [expr {$ci ? "FAILED (CI=true): " : ""}]skipped $name, constraint $c not met$why"
}
if {$ci} {
    if {$skip_names} {
        incr failed $counted_skips
    } elseif {$totals(Skipped) > 0} {
        # A tcltest without _noticeSkipped: count every skip.
        puts "all.tcl: FAILED (CI=true): $totals(Skipped) tests skipped (see tcltest's summary above)"
        incr failed $totals(Skipped)
    }
}
puts "all.tcl: $totals(Passed) passed, $failed failed, $totals(Skipped) skipped"
flush stdout
exit [expr {$failed > 0 ? 1 : 0}]
