//! Richer text for ImageNet classes that name scenes, surfaces and what people wear: the
//! class name alone ("alp", "seashore", "stone wall", "groom") says little of what a user
//! types for such a picture ("mountains", "a beach", "a wall", "a man in a suit"), so these
//! classes are embedded with a short description instead of "a photo of a {label}".

/// `(first lemma, text embedded for the class)`.
const DESCRIBED: &[(&str, &str)] = &[
    // Landscapes and natural scenes.
    ("alp", "high mountains with snow, an alpine landscape"),
    ("cliff", "a steep rocky cliff, rugged landscape"),
    ("coral reef", "a coral reef underwater in the sea"),
    (
        "geyser",
        "a geyser, steam rising from the ground in a landscape",
    ),
    (
        "lakeside",
        "a lake shore, calm water of a lake with trees and hills",
    ),
    ("promontory", "a rocky headland above the sea, a coastline"),
    ("sandbar", "a sandbar, sand and shallow water at the beach"),
    (
        "seashore",
        "a beach by the sea, sand and waves on the coast",
    ),
    (
        "valley",
        "a green valley between hills and mountains, a landscape",
    ),
    ("volcano", "a volcano, a mountain peak with smoke"),
    ("bubble", "a bubble or a water drop, close-up"),
    ("hay", "dry grass and hay in a field"),
    ("rapeseed", "a field of yellow flowers in the countryside"),
    ("daisy", "a daisy, white and yellow flowers"),
    ("corn", "corn, a field of crops"),
    ("ear", "an ear of grain, wheat in a field"),
    // Built scenes.
    ("breakwater", "a breakwater, a stone jetty in the sea"),
    ("pier", "a pier, a wooden jetty over water"),
    ("dock", "a dock in a harbour with boats"),
    ("boathouse", "a boathouse by a lake with boats"),
    ("dam", "a dam holding back a lake"),
    ("palace", "a palace, a grand historic building"),
    ("castle", "a castle, a historic building with towers"),
    ("monastery", "a monastery, an old stone building"),
    ("church", "a church building with a tower"),
    ("mosque", "a mosque with a dome and minarets"),
    ("library", "a library, shelves full of books"),
    ("dome", "a building with a dome"),
    (
        "triumphal arch",
        "a triumphal arch, a monument in a city square",
    ),
    ("steel arch bridge", "a steel arch bridge over a river"),
    ("suspension bridge", "a suspension bridge over water"),
    ("viaduct", "a viaduct, a stone bridge across a valley"),
    ("megalith", "standing stones in a landscape"),
    ("cliff dwelling", "ancient stone houses in a cliff"),
    ("barn", "a barn on a farm in the countryside"),
    ("greenhouse", "a greenhouse full of plants"),
    ("patio", "a patio, a terrace outside a house"),
    ("fountain", "a fountain with water in a city square"),
    ("restaurant", "a restaurant, tables and people eating"),
    ("grocery store", "a grocery store, a market with food"),
    ("prison", "a building with barred windows"),
    ("water tower", "a water tower above a town"),
    ("tile roof", "roofs of old houses, a town"),
    ("thatch", "an old house with a thatched roof"),
    ("planetarium", "a planetarium dome building"),
    ("wreck", "a shipwreck, a wrecked boat on the shore"),
    (
        "space shuttle",
        "a space shuttle, a rocket launch into space",
    ),
    ("radio telescope", "a radio telescope dish under the sky"),
    ("mountain tent", "a tent camping outdoors in the mountains"),
    ("maze", "a maze, a labyrinth pattern"),
    // Surfaces and textures.
    ("stone wall", "a stone wall, a surface of stones and bricks"),
    ("worm fence", "a wooden fence in a field"),
    ("picket fence", "a white wooden fence"),
    ("chainlink fence", "a wire mesh fence, a grid pattern"),
    ("honeycomb", "a honeycomb, a repeating hexagon pattern"),
    (
        "window screen",
        "a fine mesh screen, a fine repeating texture",
    ),
    ("mosquito net", "a fine net mesh texture"),
    ("manhole cover", "a metal manhole cover on a street"),
    ("doormat", "a doormat, a coarse woven texture"),
    ("chain mail", "chain mail, a metal ring pattern"),
    ("jigsaw puzzle", "a jigsaw puzzle, many interlocking pieces"),
    ("wool", "wool, a soft knitted texture"),
    ("quilt", "a quilt with a patchwork pattern"),
    ("prayer rug", "a rug with an ornamental pattern"),
    ("spider web", "a spider web with dew drops"),
    ("web site", "a screenshot of a web page with text"),
    ("book jacket", "the cover of a book with printed text"),
    (
        "crossword puzzle",
        "a crossword puzzle, printed text on paper",
    ),
    ("menu", "a menu, a printed page of text"),
    ("envelope", "an envelope, paper with writing"),
    ("comic book", "a comic book, drawings and text"),
    ("street sign", "a street sign in a city"),
    // People, through what they wear or do.
    ("groom", "a man in a suit at a wedding, a person"),
    ("scuba diver", "a scuba diver underwater, a person swimming"),
    ("ballplayer", "a baseball player, a person playing sport"),
    ("suit", "a man wearing a suit, a person"),
    ("jersey", "a person wearing a T-shirt"),
    ("sweatshirt", "a person wearing a sweatshirt"),
    (
        "military uniform",
        "a person in military uniform, a soldier",
    ),
    ("lab coat", "a person in a white lab coat"),
    ("academic gown", "a person in an academic gown"),
    ("bikini", "a woman in a bikini at the beach"),
    ("miniskirt", "a woman wearing a skirt"),
    ("gown", "a woman wearing a long gown"),
    ("wig", "a person's hair, a wig"),
    ("lipstick", "a woman's face with lipstick"),
    ("sunglasses", "a person wearing sunglasses"),
    ("mask", "a person wearing a mask"),
    ("bow tie", "a man wearing a bow tie"),
    ("Windsor tie", "a man wearing a tie"),
    ("cowboy hat", "a person wearing a cowboy hat"),
    ("sombrero", "a person wearing a sombrero"),
    ("fur coat", "a person wearing a fur coat"),
    ("trench coat", "a person wearing a coat"),
    ("kimono", "a person wearing a kimono"),
    ("crash helmet", "a person wearing a helmet"),
    (
        "football helmet",
        "an American football player wearing a helmet",
    ),
    ("swimming trunks", "a man in swimming trunks at the beach"),
    ("maillot", "a person in a swimsuit"),
    ("bulletproof vest", "a person wearing a vest"),
    ("apron", "a person wearing an apron"),
    ("pajama", "a person in pajamas"),
    ("parachute", "a parachute in the sky"),
];

/// The text embedded for a class whose first lemma is `label`, if it is described here.
pub fn described(label: &str) -> Option<&'static str> {
    DESCRIBED.iter().find(|(l, _)| *l == label).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (l, _) in DESCRIBED {
            assert!(seen.insert(*l), "{l} twice");
        }
        assert_eq!(
            described("seashore").map(|t| t.contains("beach")),
            Some(true)
        );
        assert_eq!(described("tench"), None);
    }
}
