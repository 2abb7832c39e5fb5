#!/usr/bin/env tclsh
# A WebSocket client: sends each line of stdin as a text message and prints
# what comes back.  tclsh examples/echo_client.tcl ?ws://127.0.0.1:8080/echo?
set auto_path [linsert $auto_path 0 [file dirname [file dirname [file normalize [info script]]]]]
package require websocket

set url [expr {[llength $argv] ? [lindex $argv 0] : "ws://127.0.0.1:8080/echo"}]

proc handler {sock type msg} {
    switch -- $type {
        connect    { puts "connected to $::url"; fileevent stdin readable [list line $sock] }
        text       { puts "< $msg"; incr ::pending -1; finish $sock }
        binary     { puts "< [string length $msg] bytes"; incr ::pending -1; finish $sock }
        close      { puts "closed: $msg" }
        disconnect { set ::done 1 }
        error - timeout { puts stderr "$type: $msg"; set ::done 1 }
    }
}

set pending 0
set eof 0

proc line {sock} {
    if {[gets stdin line] < 0} {
        fileevent stdin readable {}
        set ::eof 1
        finish $sock
        return
    }
    ::websocket::send $sock text $line
    incr ::pending
}

# Closes once stdin is done and every echo is back.
proc finish {sock} {
    if {$::eof && $::pending == 0} { ::websocket::close $sock 1000 "bye" }
}

::websocket::open $url handler -timeout 5000
vwait ::done
