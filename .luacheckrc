-- luacheck configuration: the gateway's Lua runs inside nginx (ngx_lua).
std = "ngx_lua"
-- No global writes anywhere (a module that leaks a global fails the lint).
allow_defined_top = false
max_line_length = 120
files["tests/lua"] = { std = "+busted", globals = { "ngx" }, unused_args = false, max_line_length = 130 }
