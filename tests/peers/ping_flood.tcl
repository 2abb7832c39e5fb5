# ping_flood.tcl -- a WebSocket client that pings and never reads, for
# tests/hostile.test (run as: tclsh ping_flood.tcl PORT COUNT).
#
# Connects to 127.0.0.1:PORT, sends a valid opening handshake, reads the
# 101 response head, then writes COUNT masked pings with 125-byte payloads
# (blocking writes, in batches) and never reads again. Prints
# "handshake ok", then "sent COUNT" once everything is written (it never
# is if the server applies backpressure), then waits for stdin EOF and
# exits. Gives up (exit 3) after 60 s.
lassign $argv port count
after 60000 {exit 3}
source [file join [file dirname [info script]] raw_handshake.tcl]
set s [raw_connect $port 1048576]
# A masked ping: FIN+opcode 9, mask bit + length 125, a zero mask key (the
# payload goes out as is; the server unmasks with it all the same).
set ping [binary format cc 0x89 [expr {0x80 | 125}]]\x00\x00\x00\x00[string repeat p 125]
set batch [string repeat $ping 1000]
for {set i 0} {$i < $count} {incr i 1000} {
    puts -nonewline $s $batch
}
flush $s
puts "sent $count"
flush stdout
fconfigure stdin -blocking 1
read stdin
exit 0
