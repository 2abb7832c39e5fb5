# busy_clients.tcl -- N WebSocket clients that each keep W messages in
# flight through an echo server, for tests/fairness.test (run as:
# tclsh busy_clients.tcl ROOTDIR PORT N W).
#
# Opens the N clients one after another (each waits for the previous one's
# connect, as a crowd arriving would not, but so that accepting them is
# spread over the run), prints "connected K" as each connects, and keeps
# echoing until stdin reaches EOF. Gives up (exit 3) after 60 s.
lassign $argv root port n window
set auto_path [linsert $auto_path 0 $root]
package require websocket
after 60000 {exit 3}
set ::connected 0
proc h {sock type msg} {
    switch -- $type {
        connect {
            puts "connected [incr ::connected]"
            flush stdout
            for {set i 0} {$i < $::window} {incr i} {::websocket::send $sock text "m$i"}
            if {$::connected < $::n} {
                ::websocket::open ws://127.0.0.1:$::port/busy h
            }
        }
        text {::websocket::send $sock text $msg}
        disconnect {puts "disconnected"; flush stdout}
    }
}
::websocket::loglevel emergency
::websocket::open ws://127.0.0.1:$port/busy h
fconfigure stdin -blocking 0
fileevent stdin readable {if {[eof stdin] || [catch {read stdin}]} {exit 0}}
vwait forever
