# big_flood.tcl -- a WebSocket client that writes binary messages as fast
# as the server takes them and never reads, for tests/hostile.test (run
# as: tclsh big_flood.tcl PORT COUNT SIZE).
#
# Connects to 127.0.0.1:PORT, sends a valid opening handshake, reads the
# 101 response head, then writes COUNT masked binary messages of SIZE
# bytes (blocking writes). Prints "handshake ok", then "wrote N" (bytes)
# after each message, then "sent N" once all are written (never, if the
# server stops reading). Waits for stdin EOF and exits. Gives up (exit 3)
# after 60 s.
lassign $argv port count size
after 60000 {exit 3}
source [file join [file dirname [info script]] raw_handshake.tcl]
set s [raw_connect $port 65536]
# A masked binary frame with a zero mask key (the payload goes out as is).
set frame [binary format ccWu 0x82 [expr {0x80 | 127}] $size]\x00\x00\x00\x00[string repeat b $size]
set n 0
for {set i 0} {$i < $count} {incr i} {
    if {[catch {puts -nonewline $s $frame; flush $s}]} {
        puts "stopped $n"
        flush stdout
        break
    }
    incr n $size
    puts "wrote $n"
    flush stdout
}
if {$i == $count} {puts "sent $n"; flush stdout}
fconfigure stdin -blocking 1
read stdin
exit 0
