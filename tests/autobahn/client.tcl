#!/usr/bin/env tclsh
# Autobahn|Testsuite client driver: runs every case offered by a
# `wstest -m fuzzingserver` against this package's ::websocket::open.
#
#   tclsh tests/autobahn/client.tcl ?-url ws://127.0.0.1:9001? ?-agent name?
#                                   ?-timeout secs? ?-pkgdir dir?
#
# For each case the server-side fuzzer sends frames; the client echoes every
# text message as text and every binary message as binary, and waits for the
# connection to end.  Nothing waits forever: each connection has a bounded
# time (-timeout, default 60 s) after which it is abandoned.
#
# Exit status: 0 when every case ended in a clean disconnect and the
# report was updated; 1 when some case did not (open failed, error event,
# abandoned at the deadline) or the report update failed; 2 when the case
# count could not be read.

array set opt {-url ws://127.0.0.1:9001 -agent tcl-websocket -timeout 60 -pkgdir ""}
array set opt $argv

if {$opt(-pkgdir) eq ""} {
    set opt(-pkgdir) [file dirname [file dirname [file dirname [file normalize [info script]]]]]
}
set auto_path [linsert $auto_path 0 $opt(-pkgdir)]
package require websocket

proc note {msg} { puts stderr "client.tcl: $msg" }

# Handler for every connection; `tag` names the connection being driven.
proc handler {tag sock type msg} {
    switch -- $type {
        text - binary {
            if {$tag eq "count"} {
                set ::casecount $msg
            } elseif {[catch {::websocket::send $sock $type $msg} err]} {
                note "$tag: send failed: $err"
            }
        }
        connect - ping - pong - close {}
        disconnect { finish $tag $type }
        error - timeout {
            # error: the socket is forgotten, no disconnect follows.
            note "$tag: $type: $msg"
            finish $tag $type
        }
    }
}

proc finish {tag how} {
    if {[info exists ::waiting($tag)]} {
        after cancel $::waiting($tag)
        unset ::waiting($tag)
        set ::done($tag) $how
    }
}

# Open url, run it to disconnect (or the deadline); returns how it ended.
proc run {tag url} {
    unset -nocomplain ::done($tag)
    if {[catch {::websocket::open $url [list handler $tag]} sock]} {
        note "$tag: open failed: $sock"
        return open-failed
    }
    set ::waiting($tag) [after [expr {int($::opt(-timeout) * 1000)}] \
        [list apply {{tag sock} {
            note "$tag: no disconnect after $::opt(-timeout) s, abandoning"
            catch {::websocket::close $sock}
            finish $tag deadline
        }} $tag $sock]]
    vwait ::done($tag)
    return $::done($tag)
}

set base [string trimright $opt(-url) /]
set agent $opt(-agent)

run count $base/getCaseCount
if {![info exists ::casecount] || ![string is integer -strict $::casecount]} {
    note "could not get the case count from $base"
    exit 2
}
note "$casecount cases"

set bad 0
for {set n 1} {$n <= $casecount} {incr n} {
    set how [run case$n "$base/runCase?case=$n&agent=$agent"]
    if {$how ne "disconnect"} { incr bad }
}

set how [run report "$base/updateReports?agent=$agent"]
if {$how ne "disconnect"} {
    note "updateReports ended with $how"
}
note "done: $casecount cases, $bad ended without a clean disconnect"
exit [expr {$bad == 0 && $how eq "disconnect" ? 0 : 1}]
