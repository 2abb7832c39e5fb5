# lifecycle.tcl -- the life of connections from creation to process exit,
# for tests/valgrind.sh (run as: tclsh lifecycle.tcl ROOTDIR).
#
#   1. a tcllib-style server and a client in the main interpreter exchange
#      text, binary, a fragmented message, a ping and a compressed text,
#      then close;
#   2. a child interpreter opens a connection and is deleted while it lives;
#   3. Thread-package threads open a connection and are released while
#      connected and receiving; one ends with thread::exit instead, one
#      with thread::exit inside its handler;
#   4. a server-side and a client-side connection are left open and the
#      script calls `exit`.
# Every connection compresses a message (from step 2 on, as its client
# connects), so compressors and their release timers meet every ending.
#
# Prints one line "step N ok" per step to stdout; any failure prints
# "FAIL ..." and exits 2. Every wait is bounded; the whole script gives up
# (exit 3) after 50 s.

set root [file normalize [lindex $argv 0]]
set auto_path [linsert $auto_path 0 $root]
package require websocket 1.7.0
package require Thread

after 50000 {puts "FAIL: lifecycle.tcl timed out"; exit 3}

proc fail {msg} {
    puts "FAIL: $msg"
    flush stdout
    exit 2
}

# Waits until expression cond holds (re-checked whenever ::ev changes),
# at most ms.
proc wait_until {cond {ms 20000}} {
    set deadline [expr {[clock milliseconds] + $ms}]
    while {![uplevel #0 [list expr $cond]]} {
        set left [expr {$deadline - [clock milliseconds]}]
        if {$left <= 0} {fail "timeout waiting for $cond; events: [array get ::ev]"}
        set id [after $left {set ::ev(__timeout) 1}]
        vwait ::ev
        after cancel $id
        unset -nocomplain ::ev(__timeout)
    }
}

proc rec {tag sock type msg} {
    lappend ::ev($tag) $type
    set ::last($tag,$type) $msg
    set ::sock($tag) $sock
    set ::ev(__changed) 1
}
proc echo {tag sock type msg} {
    rec $tag $sock $type $msg
    if {$type in {text binary}} {::websocket::send $sock $type $msg}
}
proc n {tag type} {
    if {![info exists ::ev($tag)]} {return 0}
    llength [lsearch -all -exact $::ev($tag) $type]
}

# The server: the way tcllib's users write one. Each connection records
# under its path ("/main" -> tag srv/main).
proc accept {sock addr port} {
    fconfigure $sock -translation crlf -blocking 0
    set ::hd($sock) {}
    fileevent $sock readable [list rd $sock]
}
proc rd {sock} {
    while {[gets $sock line] >= 0} {
        if {$line ne ""} {lappend ::hd($sock) $line; continue}
        fileevent $sock readable {}
        set path [lindex [split [lindex $::hd($sock) 0] " "] 1]
        set hdrs {}
        foreach l [lrange $::hd($sock) 1 end] {
            if {[regexp {^([^:]+):\s*(.*)$} $l -> k v]} {lappend hdrs $k $v}
        }
        unset ::hd($sock)
        if {[::websocket::test $::srv $sock $path $hdrs]} {
            ::websocket::upgrade $sock
        } else {
            close $sock
        }
        return
    }
    if {[eof $sock]} {close $sock; unset -nocomplain ::hd($sock)}
}
proc srvh {sock type msg} {
    if {$type eq "connect"} {set ::path($sock) [lindex $msg 0]}
    echo srv$::path($sock) $sock $type $msg
}

set srv [socket -server accept -myaddr 127.0.0.1 0]
::websocket::server $srv
::websocket::live $srv * srvh
set port [lindex [fconfigure $srv -sockname] 2]
set url ws://127.0.0.1:$port

# A text long enough to be compressed (permessage-deflate is on by default):
# each side then holds a compressor, and its interpreter an -idlerelease
# timer, through every ending below.
set long [string repeat "compressible text, " 20]
# A client handler that sends it once connected.
set sendlong [list apply {{long sock type msg} {
    if {$type eq "connect"} {::websocket::send $sock text $long}
}} $long]

# 1. Messages both ways, then a close from the client.
set c [::websocket::open $url/main [list rec cli]]
wait_until {[n cli connect] && [n srv/main connect]}
::websocket::send $c text "h\u00e9llo \U1F30D"
::websocket::send $c binary [string repeat \x00\x01\xff 1000]
::websocket::send $c text "frag" 0
::websocket::send $c ping "p"
::websocket::send $c text "ment" 1
::websocket::send $c ping "q"
wait_until {[n cli text] >= 2 && [n cli binary] >= 1 && [n cli pong] >= 2}
if {$::last(cli,text) ne "fragment"} {fail "fragmented echo: $::last(cli,text)"}
::websocket::send $c text $long
wait_until {[n cli text] >= 3}
if {$::last(cli,text) ne $long} {fail "compressed echo: $::last(cli,text)"}
::websocket::close $c 4000 done
wait_until {[n srv/main disconnect]}
puts "step 1 ok"

# 2. A child interpreter with a live connection is deleted.
interp create child
child eval [list set auto_path $auto_path]
child eval {package require websocket 1.7.0}
child eval [list ::websocket::open $url/child $sendlong]
wait_until {[n srv/child connect] && [n srv/child text]}
::websocket::send $::sock(srv/child) text "to the child"
interp delete child
wait_until {[n srv/child disconnect]}
puts "step 2 ok"

# 3. Threads with a live connection are released, while the server is
#    still sending to them: an event posted as the thread goes away must
#    not leak (it once held a reference to the mailbox).
for {set k 0} {$k < 6} {incr k} {
    set tid [thread::create]
    thread::send $tid [list set auto_path $auto_path]
    thread::send $tid {package require websocket 1.7.0}
    thread::send $tid [list ::websocket::open $url/thread$k $sendlong]
    wait_until "\[n srv/thread$k connect\] && \[n srv/thread$k text\]"
    for {set j 0} {$j < 200} {incr j} {
        ::websocket::send $::sock(srv/thread$k) text "to the thread $j"
    }
    # Not a wait: 0-2 ms of jitter, so the release meets the engine's
    # posting at different points from one thread to the next.
    after [expr {$k % 3}]
    thread::release $tid
    wait_until "\[n srv/thread$k disconnect\]"
}
# A thread that ends with thread::exit (its interpreter is not deleted):
# its connection is closed all the same.
set tid [thread::create]
thread::send $tid [list set auto_path $auto_path]
thread::send $tid {package require websocket 1.7.0}
thread::send $tid [list ::websocket::open $url/texit $sendlong]
wait_until {[n srv/texit connect] && [n srv/texit text]}
::websocket::send $::sock(srv/texit) text "to the exiting thread"
thread::send -async $tid {thread::exit}
wait_until {[n srv/texit disconnect]}
# ... and one ends with thread::exit called inside its WebSocket handler.
set tid [thread::create]
thread::send $tid [list set auto_path $auto_path]
thread::send $tid {package require websocket 1.7.0}
thread::send $tid {proc h {sock type msg} {if {$type eq "text"} {thread::exit}}}
thread::send $tid [list ::websocket::open $url/thandler h]
wait_until {[n srv/thandler connect]}
::websocket::send $::sock(srv/thandler) text "exit now"
wait_until {[n srv/thandler disconnect]}
puts "step 3 ok"

# 4. Connections left open at exit.
set c2 [::websocket::open $url/atexit [list rec cli2]]
wait_until {[n cli2 connect] && [n srv/atexit connect]}
::websocket::send $c2 text $long
wait_until {[n cli2 text]}
puts "step 4 ok"
flush stdout
exit 0
