#!/usr/bin/env tclsh
# A WebSocket echo server built the way tcllib's users build one: a plain
# `socket -server`, the request read by the script, then
# ::websocket::test and ::websocket::upgrade.
#
#   tclsh examples/echo_server.tcl ?-port 8080? ?-host 127.0.0.1? ?-page file.html? ?-quiet 1? ?-deflate 0|1?
#
# GET / serves the page (if -page is given); GET /echo (any path but /)
# upgrades to WebSocket and echoes every text and binary message.
# Runs until the process is killed. -deflate 0 turns permessage-deflate
# off (::websocket::deflate -enable 0); by default it is negotiated when a
# client offers it (this package only: tcllib has no deflate).

set here [file dirname [file normalize [info script]]]
if {[info exists ::env(WEBSOCKET_PKG)]} {
    # Benchmarks load tcllib's pure-Tcl package through this.
    lappend auto_path $::env(WEBSOCKET_PKG)
} else {
    set auto_path [linsert $auto_path 0 [file dirname $here]]
}
package require websocket

array set opt {-port 8080 -host 127.0.0.1 -page "" -quiet 0 -maxlength 0 -deflate 1}
array set opt $argv
if {!$opt(-deflate)} { ::websocket::deflate -enable 0 }

proc log {msg} { if {!$::opt(-quiet)} { puts stderr $msg } }

# A request head must arrive within 10 s and 16 KiB: a stalled or endless
# one cannot hold a socket (or memory) forever. It is read as ISO 8859-1,
# where every byte is a character: Tcl 9 channels decode strictly by default
# and `gets` would raise an error on a request line that is not UTF-8.
proc accept {sock addr port} {
    fconfigure $sock -translation crlf -encoding iso8859-1 -blocking 0 -buffering full
    set ::head($sock) {}
    set ::deadline($sock) [after 10000 [list finish $sock 408 "Request Timeout"]]
    fileevent $sock readable [list read_head $sock]
}

proc read_head {sock} {
    while {[gets $sock line] >= 0} {
        if {$line ne ""} {
            lappend ::head($sock) $line
            if {[llength $::head($sock)] > 100} { finish $sock 431 "Too many headers" }
            continue
        }
        set lines $::head($sock)
        unset ::head($sock)
        after cancel $::deadline($sock)
        unset ::deadline($sock)
        fileevent $sock readable {}
        set target [lindex [split [lindex $lines 0] " "] 1]
        set path [lindex [split $target ?] 0]
        set query [join [lrange [split $target ?] 1 end] ?]
        set hdrs {}
        foreach l [lrange $lines 1 end] {
            set colon [string first : $l]
            if {$colon > 0} {
                lappend hdrs [string range $l 0 $colon-1] \
                    [string trim [string range $l $colon+1 end] " \t"]
            }
        }
        if {[::websocket::test $::srv $sock $path $hdrs $query]} {
            ::websocket::upgrade $sock
            if {$::opt(-maxlength) > 0} {
                ::websocket::configure $sock -maxlength $::opt(-maxlength)
            }
        } elseif {$path eq "/" && $::opt(-page) ne ""} {
            set f [open $::opt(-page)]
            set body [read $f]
            close $f
            fconfigure $sock -translation binary
            set body [encoding convertto utf-8 $body]
            puts -nonewline $sock "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: [string length $body]\r\nConnection: close\r\n\r\n$body"
            close $sock
        } else {
            finish $sock 400 "Bad Request"
        }
        return
    }
    if {[eof $sock]} {
        catch {close $sock}
        unset -nocomplain ::head($sock)
        after cancel $::deadline($sock)
        unset -nocomplain ::deadline($sock)
    } elseif {[chan pending input $sock] > 16384} {
        finish $sock 431 "Request Header Fields Too Large"
    }
}

proc finish {sock code text} {
    catch {
        fileevent $sock readable {}
        fconfigure $sock -translation binary
        puts -nonewline $sock "HTTP/1.1 $code $text\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        close $sock
    }
    unset -nocomplain ::head($sock)
    if {[info exists ::deadline($sock)]} {
        after cancel $::deadline($sock)
        unset ::deadline($sock)
    }
}

proc echo {sock type msg} {
    switch -- $type {
        text - binary { ::websocket::send $sock $type $msg }
        connect { log "$sock connected: $msg" }
        close { log "$sock closed: $msg" }
    }
}

set srv [socket -server accept -myaddr $opt(-host) $opt(-port)]
::websocket::server $srv
::websocket::live $srv * echo
puts "listening on ws://$opt(-host):[lindex [fconfigure $srv -sockname] 2]/"
flush stdout
vwait forever
