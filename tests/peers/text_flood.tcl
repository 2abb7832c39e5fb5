# text_flood.tcl -- a WebSocket client that writes a deep backlog of small
# text messages, for tests/fairness.test (run as:
# tclsh text_flood.tcl PORT COUNT).
#
# Connects to 127.0.0.1:PORT, sends a valid opening handshake, reads the
# 101 response head, then writes COUNT masked text messages "m" followed by
# one "end" (blocking writes, in batches), and reads nothing more. Prints
# "handshake ok", then "sent COUNT" once everything is written, then waits
# for stdin EOF and exits. Gives up (exit 3) after 60 s.
lassign $argv port count
after 60000 {exit 3}
source [file join [file dirname [info script]] raw_handshake.tcl]
set s [raw_connect $port 1048576]
# Masked text frames with a zero mask key (the payload goes out as is).
proc frame {text} {
    return [binary format cc 0x81 [expr {0x80 | [string length $text]}]]\x00\x00\x00\x00$text
}
set batch [string repeat [frame m] 1000]
for {set i 0} {$i + 1000 <= $count} {incr i 1000} {
    puts -nonewline $s $batch
}
for {} {$i < $count} {incr i} {
    puts -nonewline $s [frame m]
}
puts -nonewline $s [frame end]
flush $s
puts "sent $count"
flush stdout
fconfigure stdin -blocking 1
read stdin
exit 0
