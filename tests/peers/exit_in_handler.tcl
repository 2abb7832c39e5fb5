# exit_in_handler.tcl -- a handler that ends its thread (thread::exit)
# inside a handler call made by a command, for tests/roundtrip.test (run
# as: tclsh exit_in_handler.tcl ROOTDIR CASE ?PORT?).
#
# CASE: close     a client's connect handler calls ::websocket::close; the
#                 close handler that causes calls thread::exit
#       upgrade   a server's connect handler, called by ::websocket::upgrade,
#                 calls thread::exit (prints "listening PORT" first)
#       takeover  a server answers the handshake itself and calls
#                 ::websocket::takeover; the connect handler calls thread::exit
#                 (prints "listening PORT" first)
# Prints "thread gone" once the thread has ended and the process still
# runs, then exits 0. Gives up (exit 3) after 20 s.
lassign $argv root case port
package require Thread
after 20000 {puts "timeout"; exit 3}
set t [thread::create]
thread::send $t [list set auto_path [linsert $auto_path 0 $root]]
thread::send $t [list set case $case]
thread::send $t [list set port $port]
set listening [thread::send $t {
    package require websocket
    ::websocket::loglevel emergency
    proc h {sock type msg} {
        switch -- $::case,$type {
            close,connect {::websocket::close $sock}
            close,close - upgrade,connect - takeover,connect {thread::exit}
        }
    }
    proc accept {sock addr p} {
        fconfigure $sock -translation crlf -blocking 0
        set ::head($sock) {}
        fileevent $sock readable [list rd $sock]
    }
    proc rd {sock} {
        while {[gets $sock line] >= 0} {
            if {$line ne ""} {lappend ::head($sock) $line; continue}
            fileevent $sock readable {}
            set hdrs {}
            foreach l [lrange $::head($sock) 1 end] {
                if {[regexp {^([^:]+):[ \t]*(.*?)[ \t]*$} $l -> k v]} {lappend hdrs $k $v}
            }
            if {$::case eq "upgrade"} {
                if {[::websocket::test $::srv $sock /x $hdrs]} {::websocket::upgrade $sock}
            } else {
                set key [dict get $hdrs Sec-WebSocket-Key]
                puts -nonewline $sock "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: [::websocket::sec-websocket-accept $key]\n\n"
                flush $sock
                ::websocket::takeover $sock h 1
            }
            return
        }
    }
    if {$::case eq "close"} {
        ::websocket::open ws://127.0.0.1:$::port/x h
    } else {
        set ::srv [socket -server accept -myaddr 127.0.0.1 0]
        ::websocket::server $::srv
        ::websocket::live $::srv * h
        lindex [fconfigure $::srv -sockname] 2
    }
}]
# Printed here, once thread::send has its answer: printed by the thread,
# the peer could connect and the thread exit before that answer came back
# ("target thread died").
if {$case ne "close"} {
    puts "listening $listening"
    flush stdout
}
proc watch {} {
    if {$::t ni [thread::names]} {
        puts "thread gone"
        flush stdout
        after 300 {exit 0}
        return
    }
    after 20 watch
}
watch
vwait forever
