# last_words.tcl -- a WebSocket endpoint that sends one last message from
# its handler and then ends at once, for tests/teardown.test (run as:
# tclsh last_words.tcl ROOTDIR ROLE MODE ?PORT? ?BIGMB? ?CERTDIR?).
#
# ROLE: client          connects to ws://127.0.0.1:PORT/last
#       server          listens on 127.0.0.1 (prints "listening PORT")
#       server-pushed   the same, with `chan push` on the accepted socket
#                       (served through the Tcl-channel transport)
#       server-tls      the same on a `tls::socket` (CERTDIR holds cert.pem
#                       and key.pem; only with MODE exit)
# MODE: exit            the handler sends "last", then calls exit
#       interp          everything runs in a child interpreter; the handler
#                       sends "last", then has the child deleted
#       thread          everything runs in a Thread-package thread; the
#                       handler sends "last", then calls thread::exit
# The handler acts when the peer sends the text "go", and sends "first",
# then BIGMB binary messages of 1 MB, then "last". The
# process ends by itself: at once for exit, otherwise 3 s after the end
# (the engine must put the close frame out while it still runs); 20 s at
# most in any case.
lassign $argv root role mode port bigmb certdir
if {$bigmb eq ""} {set bigmb 0}
after 20000 {exit 3}

set body {
    set auto_path [linsert $auto_path 0 ROOT]
    package require websocket
    ::websocket::loglevel emergency
    proc identity {cmd handle args} {
        switch -- $cmd {
            initialize {return {initialize finalize read write}}
            finalize {return}
            read - write {return [lindex $args 0]}
        }
    }
    proc handler {sock type msg} {
        if {$type ne "text" || $msg ne "go"} return
        ::websocket::send $sock text first
        for {set i 0} {$i < BIGMB} {incr i} {
            ::websocket::send $sock binary [string repeat x 1048576]
        }
        ::websocket::send $sock text last
        switch -- MODE {
            exit {exit 0}
            interp {die}
            thread {thread::exit}
        }
    }
    proc accept {sock addr port} {
        if {"ROLE" eq "server-pushed"} {chan push $sock identity}
        start_head $sock
    }
    proc start_head {sock} {
        fconfigure $sock -translation crlf -blocking 0
        set ::head($sock) {}
        fileevent $sock readable [list read_head $sock]
    }
    proc read_head {sock} {
        while {[gets $sock line] >= 0} {
            if {$line ne ""} {lappend ::head($sock) $line; continue}
            fileevent $sock readable {}
            set lines $::head($sock)
            set hdrs {}
            foreach l [lrange $lines 1 end] {
                if {[regexp {^([^:]+):[ \t]*(.*?)[ \t]*$} $l -> k v]} {lappend hdrs $k $v}
            }
            set path [lindex [split [lindex $lines 0] " "] 1]
            if {[::websocket::test $::srv $sock $path $hdrs]} {
                ::websocket::upgrade $sock
            } else {
                close $sock
            }
            return
        }
        if {[eof $sock]} {close $sock}
    }
    if {"ROLE" eq "client"} {
        ::websocket::open ws://127.0.0.1:PORT/last handler
    } elseif {"ROLE" eq "server-pushed" && "MODE" ne "exit"} {
        # The parent accepts and pushes the transformation (whose procedure
        # must outlive this interpreter or thread), then hands the socket
        # over; this listening socket only registers the server.
        set ::srv [socket -server {apply {{s a p} {close $s}}} -myaddr 127.0.0.1 0]
        ::websocket::server $::srv
        ::websocket::live $::srv * handler
    } elseif {"ROLE" eq "server-tls"} {
        package require tls
        set ::srv [tls::socket -server accept -myaddr 127.0.0.1 \
            -certfile [file join CERTDIR cert.pem] -keyfile [file join CERTDIR key.pem] 0]
        ::websocket::server $::srv
        ::websocket::live $::srv * handler
        puts "listening [lindex [fconfigure $::srv -sockname] 2]"
        flush stdout
    } else {
        set ::srv [socket -server accept -myaddr 127.0.0.1 0]
        ::websocket::server $::srv
        ::websocket::live $::srv * handler
        puts "listening [lindex [fconfigure $::srv -sockname] 2]"
        flush stdout
    }
}
set body [string map [list ROOT [list $root] ROLE $role MODE $mode PORT [list $port] \
    BIGMB $bigmb CERTDIR [list $certdir]] $body]

proc identity {cmd handle args} {
    switch -- $cmd {
        initialize {return {initialize finalize read write}}
        finalize {return}
        read - write {return [lindex $args 0]}
    }
}

# server-pushed with interp or thread: accept here, push, hand over.
proc listen_for {worker} {
    set ::listener [socket -server [list parent_accept $worker] -myaddr 127.0.0.1 0]
    puts "listening [lindex [fconfigure $::listener -sockname] 2]"
    flush stdout
}
proc parent_accept {worker sock addr port} {
    chan push $sock identity
    switch -- $::mode {
        interp {
            interp transfer {} $sock w
            w eval [list start_head $sock]
        }
        thread {
            # Not from inside the accept callback: the channel is shared there.
            after 0 [list apply {{worker sock} {
                thread::transfer $worker $sock
                thread::send -async $worker [list start_head $sock]
            }} $worker $sock]
        }
    }
}

proc finish {} {
    puts "ended"
    flush stdout
    after 3000 {exit 0}
}

switch -- $mode {
    exit {
        eval $body
    }
    interp {
        interp create w
        interp alias w die {} apply {{} {interp delete w; finish}}
        w eval $body
        if {$role eq "server-pushed"} {listen_for w}
    }
    thread {
        package require Thread
        set main [thread::id]
        set t [thread::create]
        thread::send $t [list set auto_path $auto_path]
        thread::send $t $body
        if {$role eq "server-pushed"} {listen_for $t}
        # thread::exit in the thread: the main thread notices it is gone.
        proc watch {t} {
            if {$t ni [thread::names]} {finish; return}
            after 20 [list watch $t]
        }
        watch $t
    }
}
vwait forever
