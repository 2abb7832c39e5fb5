# websocket: the Rust implementation, loaded from a checkout after
# `cargo build --release` (the installed copy gets its own pkgIndex.tcl).
if {![package vsatisfies [package provide Tcl] 8.6]} {return}
package ifneeded websocket 1.5.0 [list load [file join $dir target release libwebsocket[info sharedlibextension]] Websocket]
