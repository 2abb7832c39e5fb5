# common.tcl --
#
#	Helpers shared by the websocket test files. Sourced by every *.test
#	(several times when all.tcl runs them in one interpreter, so everything
#	here is idempotent).
#
#	Rules the helpers enforce: every wait is a vwait on an event, bounded by
#	an `after` guard; everything listens on 127.0.0.1 only; every server a
#	test starts is stopped by that test (cleanup_all in -cleanup).

package require Tcl 8.6-
package require tcltest 2.2
namespace import -force ::tcltest::*

set ::testsdir [file dirname [file normalize [info script]]]
set ::rootdir [file dirname $::testsdir]
# Our checkout first, so this package (and not tcllib's) is the one loaded.
if {[lindex $::auto_path 0] ne $::rootdir} {
    set ::auto_path [linsert $::auto_path 0 $::rootdir]
}
package require websocket 1.7.0
# The package's permessage-deflate defaults, which cleanup_all restores.
if {![info exists ::deflate_defaults]} {set ::deflate_defaults [::websocket::deflate]}
# The library built for the running Tcl: libwebsocket (8.6) or
# libtcl9websocket (Tcl 9, `make TCL_CONFIG=...`), as pkgIndex.tcl picks it.
set ::libname [expr {[package vsatisfies [package provide Tcl] 9-] ? "libtcl9websocket" : "libwebsocket"}]
set ::libfile [file join $::rootdir target release $::libname[info sharedlibextension]]

# ---------------------------------------------------------------------------
# Constraints
# ---------------------------------------------------------------------------

# ::skip_why(constraint): why a constraint is not met, for all.tcl's list
# of skipped tests (with CI=true each skip is a failure).
proc constraint {name ok why} {
    testConstraint $name $ok
    if {$ok} {
        unset -nocomplain ::skip_why($name)
    } else {
        set ::skip_why($name) $why
    }
}

# Python websockets: ws_peer.py uses the asyncio API (websockets.asyncio,
# ws.request, ws.close_code), new in websockets 13; Debian 12's 10.4 has
# no websockets.asyncio. .ci/run installs a recent one with pip.
if {![info exists ::have_pywebsockets]} {
    set ::python [lindex [auto_execok python3] 0]
    set ::have_pywebsockets 0
    set ::pywebsockets_why "no python3"
    if {$::python ne ""} {
        set ::__pyrc [catch {
            exec $::python -c {
import sys
try:
    import websockets
except Exception as e:
    print("python3 cannot import websockets: %s" % e); sys.exit(1)
v = getattr(websockets, "__version__", "0")
try:
    major = int(v.split(".")[0])
except ValueError:
    major = 0
if major < 13:
    print("python3 websockets %s is older than 13 (no websockets.asyncio): pip install 'websockets>=13'" % v); sys.exit(1)
import websockets.asyncio.server, websockets.asyncio.client
print("ok")
} 2>@1
        } ::__pyout]
        set ::have_pywebsockets [expr {!$::__pyrc}]
        set ::pywebsockets_why [lindex [split [string trim $::__pyout] \n] 0]
        unset ::__pyrc ::__pyout
    }
}
constraint pywebsockets $::have_pywebsockets $::pywebsockets_why
constraint thread [expr {![catch {package require Thread} ::__err]}] \
    "package require Thread: $::__err"
unset ::__err
constraint linux [expr {$::tcl_platform(os) eq "Linux" && [file isdirectory /proc/self/task]}] \
    "not Linux with /proc"
constraint ldd [expr {[llength [auto_execok ldd]] > 0}] "no ldd"
# node's ws package (tests/peers/ws_node_peer.js)
if {![info exists ::have_nodews]} {
    set ::node [lindex [auto_execok node] 0]
    set ::have_nodews 0
    if {$::node ne ""} {
        set ::have_nodews [expr {![catch {
            exec $::node -e [format {require(%s)} \
                '[file join $::testsdir peers node_modules ws]'] 2>@1
        }]}]
    }
}
constraint nodews $::have_nodews "node, or its ws package (npm ci --prefix tests/peers), is missing"
# tcllib 1.4.2's websocket (Debian's tcllib 1.21) under the system's Tcl
# 8.6, for peers/tcllib_server.tcl: a real server built on tcllib.
set ::tclsh86 [lindex [auto_execok tclsh8.6] 0]
constraint tcllib142 [expr {$::tclsh86 ne ""
    && [file exists /usr/share/tcltk/tcllib1.21/websocket/websocket.tcl]}] \
    "no tclsh8.6 with Debian's tcllib 1.21 (apt install tcllib)"
# The Tcl version a test is for: a skip for the other version is no
# missing tool (all.tcl never counts it as a failure).
testConstraint tcl9 [package vsatisfies [package provide Tcl] 9-]

# ---------------------------------------------------------------------------
# Bounded waits
# ---------------------------------------------------------------------------

# wait_for varName ?timeoutMs?
#	Waits (event loop running) until the global variable varName is
#	written, at most timeoutMs. Returns 1 if it was written, 0 on timeout.
proc wait_for {varName {timeout 5000}} {
    if {![string match ::* $varName]} {set varName ::$varName}
    set done ::__wait_done([incr ::__wait_id])
    set $done ""
    set tcmd [list apply {{done args} {
        if {[info exists $done] && [set $done] eq ""} {set $done event}
    }} $done]
    trace add variable $varName write $tcmd
    set aid [after $timeout [list apply {{done} {
        if {[info exists $done] && [set $done] eq ""} {set $done timeout}
    }} $done]]
    vwait $done
    trace remove variable $varName write $tcmd
    after cancel $aid
    set ok [expr {[set $done] eq "event"}]
    unset $done
    return $ok
}

# wait_until cond varName ?timeoutMs?
#	Waits until expression cond (evaluated in the caller) is true,
#	re-checking each time varName is written. Returns 1 when it holds, 0
#	if timeoutMs passed first.
proc wait_until {cond varName {timeout 5000}} {
    set deadline [expr {[clock milliseconds] + $timeout}]
    while {1} {
        if {[uplevel 1 [list expr $cond]]} {return 1}
        set left [expr {$deadline - [clock milliseconds]}]
        if {$left <= 0} {return 0}
        wait_for $varName $left
    }
}

# pump ms
#	Runs the event loop for ms milliseconds (used only to check that
#	something does NOT happen, never to wait for something that should).
proc pump {ms} {
    set v ::__pump([incr ::__wait_id])
    after $ms [list set $v 1]
    vwait $v
    unset $v
}

# ---------------------------------------------------------------------------
# Recording handler
# ---------------------------------------------------------------------------

# rec tag sock type msg
#	A websocket handler (use as [list rec $tag]) that appends {type msg}
#	to ::ev($tag) and remembers the socket in ::evsock($tag).
proc rec {tag sock type msg} {
    set ::evsock($tag) $sock
    lappend ::ev($tag) [list $type $msg]
}

# echo_rec tag sock type msg
#	Records like rec, and echoes text and binary messages back.
proc echo_rec {tag sock type msg} {
    rec $tag $sock $type $msg
    switch -- $type {
        text - binary { ::websocket::send $sock $type $msg }
    }
}

proc events {tag} {
    if {[info exists ::ev($tag)]} {return $::ev($tag)}
    return {}
}

# Types of the events recorded for tag.
proc event_types {tag} {
    lmap e [events $tag] {lindex $e 0}
}

# Messages of the events of one type recorded for tag.
proc event_msgs {tag type} {
    set r {}
    foreach e [events $tag] {
        if {[lindex $e 0] eq $type} {lappend r [lindex $e 1]}
    }
    return $r
}

proc count_events {tag type} {
    llength [event_msgs $tag $type]
}

# wait_event tag type ?timeoutMs? ?n?
#	Waits until tag has recorded at least n events of type; returns the
#	message of the n-th one. Raises an error naming what was seen instead
#	on timeout, so a failing test says why.
proc wait_event {tag type {timeout 5000} {n 1}} {
    if {![wait_until {[count_events $tag $type] >= $n} ::ev($tag) $timeout]} {
        return -code error "timeout ($timeout ms) waiting for $type #$n on $tag; got: [string range [events $tag] 0 400]"
    }
    lindex [event_msgs $tag $type] [expr {$n - 1}]
}

# ---------------------------------------------------------------------------
# tcllib-style WebSocket server (socket -server + test/upgrade)
# ---------------------------------------------------------------------------

# start_server ?-handler cmd? ?-path glob? ?-proto glob? ?-translation tr?
#	Starts a server on 127.0.0.1, port 0, the way tcllib's users write
#	one, and returns its listening socket. The default handler is
#	[list echo_rec srv]. -translation is what the script sets on the
#	accepted socket just before ::websocket::upgrade.
proc start_server {args} {
    array set o {-handler {echo_rec srv} -path * -proto * -translation crlf -live {}}
    array set o $args
    set srv [socket -server [list srv_accept $o(-translation)] -myaddr 127.0.0.1 0]
    ::websocket::server $srv
    ::websocket::live $srv $o(-path) $o(-handler) $o(-proto)
    foreach {p h pr} $o(-live) {
        ::websocket::live $srv $p $h $pr
    }
    lappend ::servers $srv
    set ::srvinfo($srv) {}
    return $srv
}

proc server_port {srv} {
    lindex [fconfigure $srv -sockname] 2
}

proc server_url {srv {path /echo}} {
    return "ws://127.0.0.1:[server_port $srv]$path"
}

proc srv_accept {tr sock addr port} {
    fconfigure $sock -translation crlf -blocking 0 -buffering full
    set ::head($sock) {}
    fileevent $sock readable [list srv_read_head $tr $sock]
}

proc srv_read_head {tr sock} {
    while {[gets $sock line] >= 0} {
        if {$line ne ""} {
            lappend ::head($sock) $line
            continue
        }
        set lines $::head($sock)
        unset ::head($sock)
        fileevent $sock readable {}
        set target [lindex [split [lindex $lines 0] " "] 1]
        set path [lindex [split $target ?] 0]
        set query [join [lrange [split $target ?] 1 end] ?]
        set hdrs {}
        foreach l [lrange $lines 1 end] {
            if {[regexp {^([^:]+):[ \t]*(.*?)[ \t]*$} $l -> k v]} {
                lappend hdrs $k $v
            }
        }
        set srv [srv_for $sock]
        set ::lastrequest [list $path $query $hdrs]
        if {[::websocket::test $srv $sock $path $hdrs $query]} {
            fconfigure $sock -translation $tr
            ::websocket::upgrade $sock
        } else {
            catch {
                fconfigure $sock -translation binary
                puts -nonewline $sock "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                close $sock
            }
        }
        return
    }
    if {[eof $sock]} {
        catch {close $sock}
        unset -nocomplain ::head($sock)
    }
}

# The listening socket a connection came in on: the one whose port is the
# connection's local port.
proc srv_for {sock} {
    set lport [lindex [fconfigure $sock -sockname] 2]
    foreach s $::servers {
        if {![catch {server_port $s} p] && $p == $lport} {return $s}
    }
    return [lindex $::servers end]
}

# connect_pair ?serverArgs? ?clientTag? ?serverTag?
#	Starts an echo server recording under serverTag, opens a client
#	recording under clientTag, waits for both connect events and returns
#	{server clientSock serverSideSock}.
proc connect_pair {{sargs {}} {ctag cli} {stag srv} {path /echo}} {
    set srv [start_server -handler [list echo_rec $stag] {*}$sargs]
    set c [::websocket::open [server_url $srv $path] [list rec $ctag]]
    wait_event $ctag connect
    wait_event $stag connect
    return [list $srv $c $::evsock($stag)]
}

# ---------------------------------------------------------------------------
# Raw (non-WebSocket) Tcl servers, for handshake-level checks
# ---------------------------------------------------------------------------

# raw_server mode
#	A plain TCP server that reads the HTTP request head into
#	::raw(head) (list of lines; ::raw(sock) is the connection) and then:
#	  silent      never answers
#	  404         answers HTTP/1.1 404
#	  badaccept   answers 101 with a wrong Sec-WebSocket-Accept
#	  accept      answers a correct 101 (followed at once by the bytes in
#	              ::raw(after_accept), if set), then keeps the socket in
#	              ::raw(sock), binary, collecting bytes in ::raw(data)
#	  frames      (no HTTP at all) collects bytes in ::raw(data) at once
proc raw_server {mode} {
    array unset ::raw
    set ::raw(data) ""
    set srv [socket -server [list raw_accept $mode] -myaddr 127.0.0.1 0]
    lappend ::servers $srv
    return $srv
}

proc raw_accept {mode sock addr port} {
    set ::raw(sock) $sock
    lappend ::rawsocks $sock
    set ::raw(head) {}
    if {$mode eq "frames"} {
        fconfigure $sock -translation binary -blocking 0
        fileevent $sock readable [list raw_collect $sock]
        set ::raw(accepted) 1
        return
    }
    fconfigure $sock -translation crlf -blocking 0
    fileevent $sock readable [list raw_head $mode $sock]
    set ::raw(accepted) 1
}

proc raw_head {mode sock} {
    while {[gets $sock line] >= 0} {
        if {$line ne ""} {
            lappend ::raw(head) $line
            continue
        }
        fileevent $sock readable {}
        set key ""
        foreach l $::raw(head) {
            regexp -nocase {^Sec-WebSocket-Key:\s*(\S+)} $l -> key
        }
        fconfigure $sock -translation binary
        switch -- $mode {
            silent {
                fileevent $sock readable [list raw_collect $sock]
            }
            404 {
                puts -nonewline $sock "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                flush $sock
            }
            badaccept {
                puts -nonewline $sock "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: [::websocket::sec-websocket-accept AAAAAAAAAAAAAAAAAAAAAA==]\r\n\r\n"
                flush $sock
                fileevent $sock readable [list raw_collect $sock]
            }
            accept {
                # ::raw(after_accept), if set, goes out in the same write.
                set more [expr {[info exists ::raw(after_accept)] ? $::raw(after_accept) : ""}]
                # ::raw(extra_headers), if set, are more header lines (CRLF each).
                set extra [expr {[info exists ::raw(extra_headers)] ? $::raw(extra_headers) : ""}]
                puts -nonewline $sock "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: [::websocket::sec-websocket-accept $key]\r\n$extra\r\n$more"
                flush $sock
                fileevent $sock readable [list raw_collect $sock]
            }
        }
        set ::raw(headdone) 1
        return
    }
    if {[eof $sock]} {
        fileevent $sock readable {}
        set ::raw(eof) 1
    }
}

proc raw_collect {sock} {
    if {[catch {read $sock} d]} {
        fileevent $sock readable {}
        set ::raw(eof) 1
        return
    }
    if {$d ne ""} {append ::raw(data) $d}
    if {[eof $sock]} {
        fileevent $sock readable {}
        set ::raw(eof) 1
    }
}

# Header value (case-insensitive name) from ::raw(head), or "" with
# ::raw(found) 0.
proc raw_header {name} {
    foreach l [lrange $::raw(head) 1 end] {
        if {[regexp {^([^:]+):\s*(.*?)\s*$} $l -> k v] && [string equal -nocase $k $name]} {
            return $v
        }
    }
    return ""
}

proc raw_has_header {name} {
    foreach l [lrange $::raw(head) 1 end] {
        if {[regexp {^([^:]+):} $l -> k] && [string equal -nocase $k $name]} {
            return 1
        }
    }
    return 0
}

# Builds one frame: fin, opcode, payload bytes, optional 32-bit mask.
proc make_frame {fin opcode payload {mask ""}} {
    set b0 [expr {($fin ? 0x80 : 0) | $opcode}]
    set len [string length $payload]
    set m [expr {$mask ne "" ? 0x80 : 0}]
    if {$len < 126} {
        set h [binary format cc $b0 [expr {$m | $len}]]
    } elseif {$len < 65536} {
        set h [binary format ccSu $b0 [expr {$m | 126}] $len]
    } else {
        set h [binary format ccWu $b0 [expr {$m | 127}] $len]
    }
    if {$mask ne ""} {
        append h [binary format Iu $mask]
        set payload [mask_bytes $mask $payload]
    }
    return $h$payload
}

proc mask_bytes {mask data} {
    binary scan [binary format Iu $mask] cu4 k
    binary scan $data cu* bytes
    set out {}
    set i 0
    foreach b $bytes {
        lappend out [expr {$b ^ [lindex $k [expr {$i % 4}]]}]
        incr i
    }
    binary format c* $out
}

# Parses the first complete frame of data: returns {fin opcode masked
# payload rest} (payload unmasked), or {} if data holds no complete frame.
proc parse_frame {data} {
    if {[string length $data] < 2} {return {}}
    binary scan $data cucu b0 b1
    set fin [expr {($b0 >> 7) & 1}]
    set op [expr {$b0 & 0xf}]
    set masked [expr {($b1 >> 7) & 1}]
    set len [expr {$b1 & 0x7f}]
    set off 2
    if {$len == 126} {
        if {[string length $data] < 4} {return {}}
        binary scan $data x2Su len
        set off 4
    } elseif {$len == 127} {
        if {[string length $data] < 10} {return {}}
        binary scan $data x2Wu len
        set off 10
    }
    if {$masked} {
        if {[string length $data] < $off + 4} {return {}}
        binary scan $data x${off}Iu key
        incr off 4
    }
    if {[string length $data] < $off + $len} {return {}}
    set payload [string range $data $off [expr {$off + $len - 1}]]
    if {$masked} {set payload [mask_bytes $key $payload]}
    return [list $fin $op $masked $payload [string range $data [expr {$off + $len}] end]]
}

# A port nobody listens on (bound, noted, closed again).
proc free_port {} {
    set s [socket -server {apply {args {}}} -myaddr 127.0.0.1 0]
    set p [lindex [fconfigure $s -sockname] 2]
    close $s
    return $p
}

# ---------------------------------------------------------------------------
# Python peer (tests/peers/ws_peer.py)
# ---------------------------------------------------------------------------

proc hex {s} {binary encode hex $s}
proc utf8hex {s} {binary encode hex [encoding convertto utf-8 $s]}
proc unhex_utf8 {h} {encoding convertfrom utf-8 [binary decode hex $h]}

# proc_start arr cmd ?mode?
#	Runs the command line cmd (a list) in another process, its stdout and
#	stderr lines collected in ::arr(out) (the newest also in ::arr(last))
#	as they arrive; ::arr(eof) is set when it ends; ::arr(chan) is the
#	pipe, opened with mode (r, or r+ to write to it).
proc proc_start {arr cmd {mode r}} {
    upvar #0 $arr p
    array unset p
    set p(out) {}
    set p(chan) [open |[concat $cmd [list 2>@1]] $mode]
    fconfigure $p(chan) -blocking 0 -buffering line
    fileevent $p(chan) readable [list proc_collect $arr]
}

proc proc_collect {arr} {
    upvar #0 $arr p
    while {[gets $p(chan) l] >= 0} {
        lappend p(out) $l
        set p(last) $l
    }
    if {[eof $p(chan)]} {
        fileevent $p(chan) readable {}
        set p(eof) 1
    }
    set p(out) $p(out) ;# wakes whoever waits on the output
}

# peer_start arr script ?arg ...?
#	proc_start for tests/peers/<script> under this tclsh.
proc peer_start {arr script args} {
    proc_start $arr [list [info nameofexecutable] [file join $::testsdir peers $script] {*}$args] r+
}

# proc_stop arr
#	Ends the process proc_start started unless it ended: TERM, then KILL
#	after 5 s; forgets ::arr. Returns its exit status (-1 if killed or
#	unknown).
proc proc_stop {arr} {
    upvar #0 $arr p
    if {![info exists p(chan)]} {return -1}
    if {![info exists p(eof)]} {
        foreach pid [pid $p(chan)] {catch {exec kill -TERM $pid}}
        if {![wait_until "\[info exists ::${arr}(eof)\]" ::${arr}(eof) 5000]} {
            foreach pid [pid $p(chan)] {catch {exec kill -KILL $pid}}
            wait_until "\[info exists ::${arr}(eof)\]" ::${arr}(eof) 2000
        }
    }
    fconfigure $p(chan) -blocking 1
    set status [expr {[catch {close $p(chan)} msg opts]
        ? ([lindex [dict get $opts -errorcode] 0] eq "CHILDSTATUS" ? [lindex [dict get $opts -errorcode] end] : -1)
        : 0}]
    array unset p
    return $status
}

# py_start mode args...
#	Starts ws_peer.py; returns its channel. Output lines are collected in
#	::__py($chan) (raw lines) as they arrive; ::__py($chan,eof) is set at EOF.
proc py_start {args} {
    set cmd [list $::python -u [file join $::testsdir peers ws_peer.py] {*}$args]
    set chan [open |[concat $cmd [list 2>@1]] r+]
    fconfigure $chan -blocking 0 -buffering line -translation lf
    set ::__py($chan) {}
    fileevent $chan readable [list py_read $chan]
    lappend ::pypeers $chan
    return $chan
}

proc py_read {chan} {
    while {[gets $chan line] >= 0} {
        lappend ::__py($chan) $line
    }
    if {[eof $chan]} {
        fileevent $chan readable {}
        set ::__py($chan,eof) 1
        set ::__py($chan) $::__py($chan) ;# wakes whoever waits on the output
    }
}

# Starts a python echo server; returns {chan port}.
proc py_server {args} {
    set chan [py_start server {*}$args]
    if {![wait_until {[llength $::__py($chan)] > 0} ::__py($chan) 10000]} {
        py_stop $chan
        return -code error "python server did not start"
    }
    set port [lindex $::__py($chan) 0]
    if {![string is integer -strict $port]} {
        py_stop $chan
        return -code error "python server said: $::__py($chan)"
    }
    return [list $chan $port]
}

# Minimal decoder for the peer's flat JSON objects (ASCII, string/int/null
# values, no escapes since payloads are hex): returns a dict.
proc json_flat {line} {
    set d {}
    foreach {- k v} [regexp -all -inline {"([^"]*)"\s*:\s*("[^"]*"|-?[0-9]+|null|true|false)} $line] {
        if {[string index $v 0] eq "\""} {set v [string range $v 1 end-1]}
        dict set d $k $v
    }
    return $d
}

# JSON events (dicts) the peer printed, optionally only those of one kind.
proc py_events {chan {kind *}} {
    set r {}
    foreach l $::__py($chan) {
        if {[string index $l 0] ne "\{"} continue
        set d [json_flat $l]
        if {[dict exists $d event] && [string match $kind [dict get $d event]]} {
            lappend r $d
        }
    }
    return $r
}

# Waits until the peer printed an event of kind (n-th one); returns it.
proc py_wait {chan kind {timeout 10000} {n 1}} {
    if {![wait_until {[llength [py_events $chan $kind]] >= $n} ::__py($chan) $timeout]} {
        return -code error "timeout waiting for python event $kind; peer said: [string range [join $::__py($chan) |] 0 600]"
    }
    lindex [py_events $chan $kind] [expr {$n - 1}]
}

# Waits for the peer to exit (bounded), killing it if it does not.
proc py_stop {chan} {
    if {[lsearch -exact $::pypeers $chan] < 0} return
    set ::pypeers [lsearch -all -inline -not -exact $::pypeers $chan]
    catch {chan close $chan write}
    if {![info exists ::__py($chan,eof)]} {
        wait_until {[info exists ::__py($chan,eof)]} ::__py($chan,eof) 5000
    }
    if {![info exists ::__py($chan,eof)]} {
        foreach p [pid $chan] {catch {exec kill -9 $p}}
        wait_until {[info exists ::__py($chan,eof)]} ::__py($chan,eof) 2000
    }
    fconfigure $chan -blocking 1
    catch {close $chan}
    array unset ::__py $chan*
}

# ---------------------------------------------------------------------------
# Cleanup
# ---------------------------------------------------------------------------

if {![info exists ::servers]} {set ::servers {}}
if {![info exists ::pypeers]} {set ::pypeers {}}
if {![info exists ::rawsocks]} {set ::rawsocks {}}

# Closes every WebSocket, server, raw socket and python peer the test made,
# and forgets recorded events.
proc cleanup_all {} {
    ::websocket::deflate {*}$::deflate_defaults
    foreach s [::websocket::find] {
        catch {::websocket::close $s}
    }
    foreach s $::servers {
        catch {close $s}
    }
    set ::servers {}
    foreach s $::rawsocks {
        catch {close $s}
    }
    set ::rawsocks {}
    foreach c $::pypeers {
        py_stop $c
    }
    foreach s [array names ::head] {catch {close $s}}
    array unset ::head
    array unset ::ev
    array unset ::evsock
    array unset ::raw
    array unset ::srvinfo
}

# Writes to stdout (where the package logs, as tcllib's logger does) are
# captured into ::captured while capture_start/capture_stop bracket them.
namespace eval ::capture {
    proc initialize {handle mode} {return {initialize finalize write flush}}
    proc finalize {handle} {}
    proc write {handle data} {append ::captured $data; return ""}
    proc flush {handle} {return ""}
    namespace export *
    namespace ensemble create
}
proc capture_start {} {
    set ::captured ""
    flush stdout
    chan push stdout ::capture
}
proc capture_stop {} {
    flush stdout
    chan pop stdout
    return $::captured
}

# ---------------------------------------------------------------------------
# Memory of this process (Linux /proc)
# ---------------------------------------------------------------------------

# A field of /proc/self/status in KiB (VmRSS, VmHWM), 0 if absent.
proc proc_status_kib {field} {
    set f [open /proc/self/status]
    set s [read $f]
    close $f
    if {[regexp "${field}:\\s+(\\d+)" $s -> kib]} {return $kib}
    return 0
}
proc vmrss_kib {} {proc_status_kib VmRSS}

# Peak resident memory while something happens: mem_watch_start resets
# the kernel's high-water mark (VmHWM, via /proc/self/clear_refs) and also
# samples VmRSS every 5 ms; mem_watch_stop returns the peak growth in KiB
# over VmRSS at the start.
proc vmhwm_kib {} {proc_status_kib VmHWM}
proc mem_watch_start {} {
    set ::memw(hwm) [expr {![catch {
        set f [open /proc/self/clear_refs w]
        puts $f 5
        close $f
    }]}]
    set ::memw(rss0) [vmrss_kib]
    set ::memw(max) $::memw(rss0)
    mem_sample
}
proc mem_sample {} {
    set r [vmrss_kib]
    if {$r > $::memw(max)} {set ::memw(max) $r}
    set ::memw(timer) [after 5 mem_sample]
}
proc mem_watch_stop {} {
    after cancel $::memw(timer)
    set peak $::memw(max)
    if {$::memw(hwm) && [vmhwm_kib] > $peak} {set peak [vmhwm_kib]}
    set grew [expr {$peak - $::memw(rss0)}]
    array unset ::memw
    return $grew
}

# Binary string holding every byte value, repeated to n bytes.
proc all_bytes {n} {
    set chunk ""
    for {set i 0} {$i < 256} {incr i} {append chunk [binary format c $i]}
    set s [string repeat $chunk [expr {$n / 256 + 1}]]
    string range $s 0 [expr {$n - 1}]
}
