# raw_handshake.tcl -- sourced by the flooding peers: opens a raw WebSocket
# client connection without the package under test.

# raw_connect port bufsize
#	Connects to 127.0.0.1:port, sends a valid opening handshake, reads the
#	101 response head and returns the binary, fully buffered socket.
#	Prints "handshake ok"; on a refusal prints why and exits 2.
proc raw_connect {port bufsize} {
    set s [socket 127.0.0.1 $port]
    fconfigure $s -translation binary -buffering full -buffersize $bufsize
    puts -nonewline $s "GET /flood HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    flush $s
    set head ""
    while {[string first "\r\n\r\n" $head] < 0} {
        set c [read $s 1]
        if {$c eq ""} {puts "no handshake"; exit 2}
        append head $c
    }
    if {![string match "HTTP/1.1 101 *" $head]} {puts "refused: $head"; exit 2}
    puts "handshake ok"
    flush stdout
    return $s
}
