//! The bitmap font the tags and the class panel are written in.
//!
//! One 5x9 cell per printable ASCII character (`' '..='~'`): capitals and
//! digits use rows 0..7, lowercase letters rows 2..7, descenders (`g j p q y`)
//! rows 7..9. The glyphs were drawn for this crate and are part of it, so the
//! plugin needs no font file and no font crate. They are kept below as
//! pictures (`#` on, `.` off), 16 characters to a band, and turned into bit
//! rows at compile time: a malformed line is a build error, not a blank
//! glyph at run time.
//!
//! Characters outside printable ASCII (accents, CJK, control characters) are
//! drawn as a hollow box, so a label the font cannot show still takes its
//! place and visibly says so.

/// Width of a glyph, in font units (pixels at scale 1).
pub const GLYPH_W: u32 = 5;
/// Height of a glyph cell, descenders included.
pub const GLYPH_H: u32 = 9;
/// Rows of a capital letter or digit (rows 0..CAP_H of the cell).
pub const CAP_H: u32 = 7;
/// Horizontal distance from one character to the next (one unit of gap).
pub const ADVANCE: u32 = GLYPH_W + 1;

/// One glyph: a row per entry, bit 4 the leftmost column.
pub type Glyph = [u8; GLYPH_H as usize];

const FIRST: u32 = 0x20;
const COUNT: usize = 96;
/// The glyph drawn for a character the font lacks (in the slot of DEL).
const FALLBACK: usize = COUNT - 1;

/// The glyph for `c`.
pub fn glyph(c: char) -> &'static Glyph {
    let code = c as u32;
    let index = if (FIRST..FIRST + FALLBACK as u32).contains(&code) {
        (code - FIRST) as usize
    } else {
        FALLBACK
    };
    &GLYPHS[index]
}

/// Width of `text` in font units (multiply by the scale for pixels): no
/// trailing gap after the last character.
pub fn text_width(text: &str) -> u32 {
    let n = text.chars().count() as u32;
    (n * ADVANCE).saturating_sub(1)
}

static GLYPHS: [Glyph; COUNT] = parse(&BANDS);

/// Turns the pictures into bit rows; panics (at compile time) on a line that
/// is not 16 cells of 5 `#`/`.` separated by spaces.
const fn parse(bands: &[[&str; GLYPH_H as usize]; 6]) -> [Glyph; COUNT] {
    let mut glyphs = [[0u8; GLYPH_H as usize]; COUNT];
    let mut band = 0;
    while band < bands.len() {
        let mut row = 0;
        while row < GLYPH_H as usize {
            let line = bands[band][row].as_bytes();
            assert!(
                line.len() == 16 * 6 - 1,
                "font: a band line is not 16 cells wide"
            );
            let mut cell = 0;
            while cell < 16 {
                let mut bits = 0u8;
                let mut col = 0;
                while col < GLYPH_W as usize {
                    bits = match line[cell * 6 + col] {
                        b'#' => (bits << 1) | 1,
                        b'.' => bits << 1,
                        _ => panic!("font: a cell holds something other than '#' or '.'"),
                    };
                    col += 1;
                }
                glyphs[band * 16 + cell][row] = bits;
                cell += 1;
            }
            row += 1;
        }
        band += 1;
    }
    glyphs
}

#[rustfmt::skip]
const BANDS: [[&str; GLYPH_H as usize]; 6] = [
    //   ! " # $ % & ' ( ) * + , - . /
    [
        "..... ..#.. .#.#. .#.#. ..#.. ##... .##.. ..#.. ...#. .#... ..... ..... ..... ..... ..... .....",
        "..... ..#.. .#.#. .#.#. .#### ##..# #..#. ..#.. ..#.. ..#.. ..#.. ..#.. ..... ..... ..... ....#",
        "..... ..#.. .#.#. ##### #.#.. ...#. #.#.. .#... .#... ...#. #.#.# ..#.. ..... ..... ..... ...#.",
        "..... ..#.. ..... .#.#. .###. ..#.. .#... ..... .#... ...#. .###. ##### ..... ##### ..... ..#..",
        "..... ..#.. ..... ##### ..#.# .#... #.#.# ..... .#... ...#. #.#.# ..#.. ..... ..... ..... .#...",
        "..... ..... ..... .#.#. ####. #..## #..#. ..... ..#.. ..#.. ..#.. ..#.. .##.. ..... .##.. #....",
        "..... ..#.. ..... .#.#. ..#.. ...## .##.# ..... ...#. .#... ..... ..... ..#.. ..... .##.. .....",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .#... ..... ..... .....",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    ],
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    [
        ".###. ..#.. .###. ##### ...#. ##### ..##. ##### .###. .###. ..... ..... ...#. ..... .#... .###.",
        "#...# .##.. #...# ...#. ..##. #.... .#... ....# #...# #...# .##.. .##.. ..#.. ..... ..#.. #...#",
        "#..## ..#.. ....# ..#.. .#.#. ####. #.... ...#. #...# #...# .##.. .##.. .#... ##### ...#. ....#",
        "#.#.# ..#.. ...#. ...#. #..#. ....# ####. ..#.. .###. .#### ..... ..... #.... ..... ....# ...#.",
        "##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....# .##.. .##.. .#... ##### ...#. ..#..",
        "#...# ..#.. .#... #...# ...#. #...# #...# .#... #...# ...#. .##.. .##.. ..#.. ..... ..#.. .....",
        ".###. .###. ##### .###. ...#. .###. .###. .#... .###. .##.. ..... ..#.. ...#. ..... .#... ..#..",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .#... ..... ..... ..... .....",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    ],
    // @ A B C D E F G H I J K L M N O
    [
        ".###. .###. ####. .###. ###.. ##### ##### .###. #...# .###. ..### #...# #.... #...# #...# .###.",
        "#...# #...# #...# #...# #..#. #.... #.... #...# #...# ..#.. ...#. #..#. #.... ##.## #...# #...#",
        "....# #...# #...# #.... #...# #.... #.... #.... #...# ..#.. ...#. #.#.. #.... #.#.# ##..# #...#",
        ".##.# ##### ####. #.... #...# ####. ####. #.### ##### ..#.. ...#. ##... #.... #.#.# #.#.# #...#",
        "#.#.# #...# #...# #.... #...# #.... #.... #...# #...# ..#.. ...#. #.#.. #.... #...# #..## #...#",
        "#.#.# #...# #...# #...# #..#. #.... #.... #...# #...# ..#.. #..#. #..#. #.... #...# #...# #...#",
        ".###. #...# ####. .###. ###.. ##### #.... .#### #...# .###. .##.. #...# ##### #...# #...# .###.",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    ],
    // P Q R S T U V W X Y Z [ \ ] ^ _
    [
        "####. .###. ####. .#### ##### #...# #...# #...# #...# #...# ##### .###. ..... .###. ..#.. .....",
        "#...# #...# #...# #.... ..#.. #...# #...# #...# #...# #...# ....# .#... #.... ...#. .#.#. .....",
        "#...# #...# #...# #.... ..#.. #...# #...# #...# .#.#. #...# ...#. .#... .#... ...#. #...# .....",
        "####. #...# ####. .###. ..#.. #...# #...# #.#.# ..#.. .#.#. ..#.. .#... ..#.. ...#. ..... .....",
        "#.... #.#.# #.#.. ....# ..#.. #...# #...# #.#.# .#.#. ..#.. .#... .#... ...#. ...#. ..... .....",
        "#.... #..#. #..#. ....# ..#.. #...# .#.#. #.#.# #...# ..#.. #.... .#... ....# ...#. ..... .....",
        "#.... .##.# #...# ####. ..#.. .###. ..#.. .#.#. #...# ..#.. ##### .###. ..... .###. ..... .....",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... #####",
        "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    ],
    // ` a b c d e f g h i j k l m n o
    [
        ".#... ..... #.... ..... ....# ..... ..##. ..... #.... ..#.. ...#. #.... .##.. ..... ..... .....",
        "..#.. ..... #.... ..... ....# ..... .#..# ..... #.... ..... ..... #.... ..#.. ..... ..... .....",
        "...#. .###. #.##. .###. .##.# .###. .#... .#### #.##. .##.. ..##. #..#. ..#.. ##.#. #.##. .###.",
        "..... ....# ##..# #.... #..## #...# ###.. #...# ##..# ..#.. ...#. #.#.. ..#.. #.#.# ##..# #...#",
        "..... .#### #...# #.... #...# ##### .#... #...# #...# ..#.. ...#. ##... ..#.. #.#.# #...# #...#",
        "..... #...# #...# #...# #...# #.... .#... #...# #...# ..#.. ...#. #.#.. ..#.. #.#.# #...# #...#",
        "..... .#### ####. .###. .#### .###. .#... .#### #...# .###. ...#. #..#. .###. #.#.# #...# .###.",
        "..... ..... ..... ..... ..... ..... ..... ....# ..... ..... #..#. ..... ..... ..... ..... .....",
        "..... ..... ..... ..... ..... ..... ..... .###. ..... ..... .##.. ..... ..... ..... ..... .....",
    ],
    // p q r s t u v w x y z { | } ~ (DEL: the fallback box)
    [
        "..... ..... ..... ..... .#... ..... ..... ..... ..... ..... ..... ...#. ..#.. .#... ..... #####",
        "..... ..... ..... ..... .#... ..... ..... ..... ..... ..... ..... ..#.. ..#.. ..#.. ..... #...#",
        "####. .#### #.##. .#### ###.. #...# #...# #...# #...# #...# ##### ..#.. ..#.. ..#.. .#... #...#",
        "#...# #...# ##..# #.... .#... #...# #...# #...# .#.#. #...# ...#. .#... ..#.. ...#. #.#.# #...#",
        "#...# #...# #.... .###. .#... #...# #...# #.#.# ..#.. #...# ..#.. ..#.. ..#.. ..#.. ...#. #...#",
        "#...# #...# #.... ....# .#..# #..## .#.#. #.#.# .#.#. #...# .#... ..#.. ..#.. ..#.. ..... #...#",
        "####. .#### #.... ####. ..##. .##.# ..#.. .#.#. #...# .#### ##### ...#. ..#.. .#... ..... #####",
        "#.... ....# ..... ..... ..... ..... ..... ..... ..... ....# ..... ..... ..#.. ..... ..... .....",
        "#.... ....# ..... ..... ..... ..... ..... ..... ..... .###. ..... ..... ..... ..... ..... .....",
    ],
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The glyph as pictured in `BANDS`, for readable assertions.
    fn picture(c: char) -> Vec<String> {
        glyph(c)
            .iter()
            .map(|row| {
                (0..GLYPH_W)
                    .map(|col| if row & (0x10 >> col) != 0 { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn glyphs_are_parsed_from_their_pictures() {
        assert_eq!(
            picture('A'),
            [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#", ".....", "....."]
        );
        assert_eq!(picture('g')[7..], ["....#", ".###."]);
        assert!(picture(' ').iter().all(|row| row == "....."));
    }

    #[test]
    fn every_printable_character_has_its_own_glyph() {
        let printable: Vec<char> = (' '..='~').collect();
        for (i, &a) in printable.iter().enumerate() {
            if a != ' ' {
                assert!(glyph(a).iter().any(|&row| row != 0), "{a:?} is blank");
            }
            for &b in &printable[i + 1..] {
                assert_ne!(glyph(a), glyph(b), "{a:?} and {b:?} look the same");
            }
        }
    }

    #[test]
    fn only_descenders_reach_below_the_baseline() {
        for c in ' '..='~' {
            let below = glyph(c)[CAP_H as usize..].iter().any(|&row| row != 0);
            assert_eq!(below, "gjpqy,;_|".contains(c), "{c:?}");
        }
    }

    #[test]
    fn characters_the_font_lacks_are_a_box() {
        for c in ['é', '猫', '\n', '\u{7f}'] {
            assert_eq!(glyph(c), &GLYPHS[FALLBACK], "{c:?}");
        }
        assert_ne!(glyph('~'), &GLYPHS[FALLBACK]);
    }

    #[test]
    fn text_width_counts_characters_not_bytes() {
        assert_eq!(text_width(""), 0);
        assert_eq!(text_width("a"), 5);
        assert_eq!(text_width("person 0.87"), 11 * 6 - 1);
        assert_eq!(text_width("café"), 4 * 6 - 1);
    }
}
