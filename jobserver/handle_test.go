package jobserver

import "testing"

func TestAtoiLikeStrtol(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		u32  uint32 // what gearmand stores for WORK_STATUS
	}{
		{"", 0, 0}, {"abc", 0, 0}, {"10x", 10, 10}, {" 7", 7, 7}, {"8 ", 8, 8}, {"+5", 5, 5},
		{"-1", -1, 4294967295}, {"4294967295", 4294967295, 4294967295}, {"4294967296", 4294967296, 0},
		{"99999999999999999999", 1<<63 - 1, 4294967295}, {"-99999999999999999999", -1 << 63, 0},
		{"9223372036854775807", 1<<63 - 1, 4294967295}, {"-9223372036854775808", -1 << 63, 0},
	}
	for _, tt := range tests {
		got := atoi([]byte(tt.in))
		if got != tt.want || uint32(got) != tt.u32 {
			t.Errorf("atoi(%q) = %d (u32 %d), want %d (u32 %d)", tt.in, got, uint32(got), tt.want, tt.u32)
		}
	}
}
