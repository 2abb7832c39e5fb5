# tcllib_server.tcl -- an echo server on tcllib's own websocket package (not
# this one), written the way tcllib's users write one: `socket -server`,
# the request head read by the script, `::websocket::test`, `upgrade`.
# Prints "listening PORT" (or "no tcllib websocket VERSION: ..." and exits
# 2); ends when its standard input closes, or after 60 s.
# Run as: tclsh tcllib_server.tcl VERSION (1.4.2: Debian's tcllib 1.21).
lassign $argv version
after 60000 {exit 3}
if {[catch {package require -exact websocket $version} err]} {
    puts "no tcllib websocket $version: $err"
    exit 2
}
::websocket::loglevel emergency

proc echo {sock type msg} {
    if {$type eq "text"} {::websocket::send $sock text $msg}
}

proc accept {sock addr port} {
    fconfigure $sock -translation crlf -blocking 0
    set ::head($sock) {}
    fileevent $sock readable [list head $sock]
}

proc head {sock} {
    while {[gets $sock line] >= 0} {
        if {$line ne ""} {
            lappend ::head($sock) $line
            continue
        }
        fileevent $sock readable {}
        set lines $::head($sock)
        unset ::head($sock)
        set path [lindex [split [lindex $lines 0] " "] 1]
        set hdrs {}
        foreach l [lrange $lines 1 end] {
            if {[regexp {^([^:]+):[ \t]*(.*?)[ \t]*$} $l -> k v]} {lappend hdrs $k $v}
        }
        # tcllib 1.4.2 raises an error here for a request that offers no
        # subprotocol; the script's accept callback then fails in the
        # background and the client never gets an answer.
        if {[::websocket::test $::srv $sock $path $hdrs]} {
            ::websocket::upgrade $sock
        } else {
            close $sock
        }
        return
    }
    if {[eof $sock]} {close $sock}
}

set srv [socket -server accept -myaddr 127.0.0.1 0]
::websocket::server $srv
::websocket::live $srv /echo echo
interp bgerror {} {apply {{msg opts} {}}}
fconfigure stdin -blocking 0
fileevent stdin readable {if {[eof stdin] || [gets stdin] < 0 && [eof stdin]} {exit 0}}
puts "listening [lindex [fconfigure $srv -sockname] 2]"
flush stdout
vwait forever
