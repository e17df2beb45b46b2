#![no_main]
libfuzzer_sys::fuzz_target!(init: osprey::fuzzing::image_init(), |data: &[u8]| osprey::fuzzing::image(data));
