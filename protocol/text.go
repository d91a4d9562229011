package protocol

import "strings"

// Admin text replies. gearmand ends list replies with ".\n", bare OK and ERR
// replies with "\r\n", and "OK <value>" with "\n"; clients such as gearadmin
// read until the connection is quiet, so each reply must leave in one write.
const (
	TextOK      = "OK\r\n"
	TextListEnd = ".\n"
)

// AppendTextError appends an admin error line, "ERR <code> <text>\r\n", with
// the spaces of text turned into '+' as gearmand does, so that the reply
// stays three tokens long.
func AppendTextError(dst []byte, code, text string) []byte {
	dst = append(dst, "ERR "...)
	dst = append(dst, code...)
	dst = append(dst, ' ')
	dst = append(dst, strings.ReplaceAll(text, " ", "+")...)
	return append(dst, "\r\n"...)
}

// AppendTextValue appends "OK <value>\n", the reply of version and getpid.
func AppendTextValue(dst []byte, value string) []byte {
	dst = append(dst, "OK "...)
	dst = append(dst, value...)
	return append(dst, '\n')
}
