# websocket: the Rust implementation, loaded from a checkout after
# `cargo build --release` (the installed copy gets its own pkgIndex.tcl, the
# same script with the library's installed path: keep the two alike).
# `load` of a library this interpreter loaded before does not run its init
# again, so after `package forget websocket` or `namespace delete ::websocket`
# the hidden command websocket_reinit brings the commands back and provides
# the package.
if {![package vsatisfies [package provide Tcl] 8.6]} {return}
package ifneeded websocket 1.5.0 "[list load [file join $dir target release libwebsocket[info sharedlibextension]] Websocket]; [list if {[package provide websocket] eq ""} {interp invokehidden {} websocket_reinit}]"
