# websocket: the Rust implementation, loaded from a checkout after `make`
# (target/release/libwebsocket.so, for Tcl 8.6) and/or `make
# TCL_CONFIG=.../tclConfig.sh` of a Tcl 9 (target/release/libtcl9websocket.so,
# Tcl 9's naming). The library for the running Tcl is offered if it was built.
# The installed copy gets its own pkgIndex.tcl (see the Makefile), the same
# script with the library's installed path: keep the two alike.
# `load` of a library this interpreter loaded before does not run its init
# again, so after `package forget websocket` or `namespace delete ::websocket`
# the hidden command websocket_reinit brings the commands back and provides
# the package.
if {![package vsatisfies [package provide Tcl] 8.6-]} {return}
apply {{dir} {
    set name [expr {[package vsatisfies [package provide Tcl] 9-] ? "libtcl9websocket" : "libwebsocket"}]
    set lib [file join $dir target release $name[info sharedlibextension]]
    if {![file exists $lib]} {return}
    package ifneeded websocket 1.7.0 "[list load $lib Websocket]; [list if {[package provide websocket] eq ""} {interp invokehidden {} websocket_reinit}]"
}} $dir
