package resp

// globMatch reports whether s matches the Redis glob pattern, with the
// semantics of Redis's stringmatchlen (byte-wise, case-sensitive): a star
// matches any run of bytes, also none; '?' any one byte; "[abc]" one of the
// listed bytes, "[^abc]" any other, "[a-z]" a range (reversed ranges like
// "[z-a]" are the same range); a backslash takes the next byte literally,
// inside a class too. An unterminated class ("[abc") ends with the pattern,
// and a trailing lone backslash matches a backslash, as in Redis.
//
// Unlike Redis's recursive matcher it backtracks only to the last star, so a
// hostile pattern costs O(len(pattern)*len(s)) at worst, never exponential
// time: every token but the star consumes exactly one byte, so retrying only
// the last star finds a match whenever one exists.
func globMatch(pattern, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0 // pattern index after the last star, and where it began in s
	for si < len(s) {
		if pi < len(pattern) && pattern[pi] == '*' {
			for pi < len(pattern) && pattern[pi] == '*' {
				pi++
			}
			if pi == len(pattern) {
				return true
			}
			starP, starS = pi, si
			continue
		}
		if pi < len(pattern) {
			if ok, next := globOne(pattern, pi, s[si]); ok {
				pi, si = next, si+1
				continue
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last star swallow one more byte and retry from there.
		starS++
		pi, si = starP, starS
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

// globOne matches the single non-star token at pattern[pi] against c and
// returns the index of the token after it.
func globOne(pattern string, pi int, c byte) (bool, int) {
	switch pattern[pi] {
	case '?':
		return true, pi + 1
	case '\\':
		if pi+1 < len(pattern) {
			return pattern[pi+1] == c, pi + 2
		}
		return c == '\\', pi + 1
	case '[':
		return globClass(pattern, pi+1, c)
	}
	return pattern[pi] == c, pi + 1
}

// globClass matches c against the class whose body starts at pattern[i]
// (just after '[') and returns the index after its closing ']'.
func globClass(pattern string, i int, c byte) (bool, int) {
	negate := i < len(pattern) && pattern[i] == '^'
	if negate {
		i++
	}
	match := false
	for i < len(pattern) && pattern[i] != ']' {
		switch {
		case pattern[i] == '\\' && i+1 < len(pattern):
			if pattern[i+1] == c {
				match = true
			}
			i += 2
		case i+2 < len(pattern) && pattern[i+1] == '-':
			lo, hi := pattern[i], pattern[i+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			if c >= lo && c <= hi {
				match = true
			}
			i += 3
		default:
			if pattern[i] == c {
				match = true
			}
			i++
		}
	}
	if i < len(pattern) {
		i++ // the closing ']'
	}
	return match != negate, i
}
